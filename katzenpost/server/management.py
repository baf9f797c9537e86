"""The node's management socket: the reference's "thwack" line protocol on a UNIX stream socket.

A session gets the banner `220 <Identifier> Katzenpost Management Interface Service ready`, then
sends one command a line (`\\n` or `\\r\\n`) and gets one `<code> <text>\\r\\n` reply a command (none
for SHUTDOWN). The verb is case-insensitive, its arguments are case-preserved, and handlers see
the trimmed line split on single spaces, as the reference's handlers do. Commands themselves are
registered by `node_commands.register_node_commands`; this module only runs the protocol.

Every session is bounded (line length, reply writes, idle time, handler time, session count), so a
misbehaving client costs the node at most one slot and never another session's service.
"""
import asyncio
import contextlib
import inspect
import logging
import os
import socket
import stat
import tempfile

log = logging.getLogger("katzenpost.server.management")

SERVICE_SUFFIX = "Katzenpost Management Interface"
REPLY_OK = "250 Requested action ok, completed"
REPLY_UNKNOWN = "500 Syntax error, command unrecognised"
REPLY_SYNTAX = "501 Syntax error in parameters or arguments"
REPLY_FAILED = "554 Transaction failed"

MAX_LINE_BYTES = 4096           # a longer line gets 501 and the session is closed
MAX_SESSIONS = 32               # concurrent sessions; one more is told so and closed
IDLE_TIMEOUT = 900.0            # seconds a session may wait between two commands
WRITE_TIMEOUT = 10.0            # seconds a reply may wait for a client that does not read
HANDLER_TIMEOUT = 30.0          # seconds a command may run before it fails with 554
_WRITE_BUFFER_HIGH = 64 * 1024  # bytes of replies buffered before we wait for the client
_SUN_PATH_MAX = 107             # bytes of a UNIX socket path on Linux (108 with the NUL)


class ManagementSyntaxError(Exception):
    """Raised by a handler: the arguments are wrong (reply 501)."""


class ManagementFailure(Exception):
    """Raised by a handler: the command was understood but failed (reply 554, plus the detail
    when one is given: `554 Transaction failed: <detail>`)."""

    def __init__(self, detail: str = ""):
        super().__init__(detail)
        self.detail = detail


class ManagementServer:
    """Thwack server on the UNIX socket at `path`; `register` handlers, then `start`/`stop`."""

    def __init__(self, path: str, identifier: str, *, max_sessions: int = MAX_SESSIONS,
                 max_line_bytes: int = MAX_LINE_BYTES, idle_timeout: float = IDLE_TIMEOUT,
                 write_timeout: float = WRITE_TIMEOUT, handler_timeout: float = HANDLER_TIMEOUT):
        if not path:
            raise ValueError("management: the socket path is empty")
        self.path = path
        self.identifier = identifier
        self._handlers = {}
        self._max_sessions = max_sessions
        self._max_line = max_line_bytes
        self._idle_timeout = idle_timeout
        self._write_timeout = write_timeout
        self._handler_timeout = handler_timeout
        self._server = None
        self._socket_id = None          # (st_dev, st_ino) of the socket file we created
        self._sessions = set()          # asyncio tasks, one a session

    @property
    def banner(self) -> str:
        return f"220 {self.identifier} {SERVICE_SUFFIX} Service ready"

    def register(self, verb: str, handler) -> None:
        """`async def handler(fields: list[str]) -> str | None`, run for lines whose first field
        is `verb` in any case. It returns the reply line without CRLF, or None for no reply.
        QUIT is built in (reply 250, then the session closes) and cannot be replaced."""
        if not verb or " " in verb or verb.upper() == "QUIT":
            raise ValueError(f"management: invalid verb {verb!r}")
        self._handlers[verb.upper()] = handler

    # ------------------------------------------------------------ listener
    async def start(self) -> None:
        """Bind the socket (mode 0600, replacing any file at the path) and start accepting."""
        if self._server is not None:
            raise RuntimeError("management: already started")
        sock = _bind_private_unix_socket(self.path)
        try:
            info = os.stat(self.path)
            self._socket_id = (info.st_dev, info.st_ino)
            self._server = await asyncio.start_unix_server(
                self._on_connection, sock=sock, limit=self._max_line + 2)
        except BaseException:
            sock.close()
            self._unlink_own_socket()
            raise
        log.info("management: listening on %s", self.path)

    async def stop(self) -> None:
        """Stop accepting, end every session, remove the socket file."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        # Not the caller's own session, should a command handler halt the node itself.
        sessions = [task for task in self._sessions if task is not asyncio.current_task()]
        for task in sessions:
            task.cancel()
        if sessions:
            await asyncio.wait(sessions, timeout=self._write_timeout)
        if server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), self._write_timeout)
        self._unlink_own_socket()

    def _unlink_own_socket(self):
        # Only our own socket: a node started since may own the path now.
        if self._socket_id is None:
            return
        with contextlib.suppress(OSError):
            info = os.lstat(self.path)
            if (info.st_dev, info.st_ino) == self._socket_id:
                os.unlink(self.path)
        self._socket_id = None

    # ------------------------------------------------------------ sessions
    async def _on_connection(self, reader, writer):
        task = asyncio.current_task()
        writer.transport.set_write_buffer_limits(high=_WRITE_BUFFER_HIGH)
        if len(self._sessions) >= self._max_sessions:
            log.warning("management: %d sessions open, refusing one more", len(self._sessions))
            await self._close(writer, f"{REPLY_FAILED}: too many management sessions")
            return
        self._sessions.add(task)
        try:
            await self._session(reader, writer)
        except (asyncio.CancelledError, ConnectionError, asyncio.TimeoutError):
            pass                         # halting, or the client went away or stopped reading
        except Exception:
            log.exception("management: session failed")
        finally:
            self._sessions.discard(task)
            await self._finish(writer)

    async def _session(self, reader, writer):
        await self._write(writer, self.banner)
        while True:
            raw, last = await self._read_line(reader)
            if raw is None:
                await self._write(writer, REPLY_SYNTAX)      # line too long: resync is guesswork
                return
            if raw:
                reply, quit_session = await self._execute(raw)
                if reply is not None:
                    await self._write(writer, reply)
                if quit_session or self._server is None:      # QUIT, or the server stopped
                    return
            if last:
                return

    async def _read_line(self, reader):
        """(bytes of one line, or None when it is too long; whether the client finished sending)."""
        last = False
        try:
            # asyncio.timeout, not wait_for: a line arriving with the stop's cancellation must
            # not swallow it (Python 3.11's wait_for returns the result and drops the cancel).
            async with asyncio.timeout(self._idle_timeout):
                raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as eof:
            raw, last = eof.partial, True   # half-closed: its unterminated last line still counts
        except asyncio.LimitOverrunError:
            return None, False
        if len(raw.rstrip(b"\r\n")) > self._max_line:
            return None, last
        return raw, last

    async def _execute(self, raw):
        """(reply line or None, whether the session ends after it)."""
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            return REPLY_SYNTAX, False
        if "\x00" in line:
            return REPLY_SYNTAX, False
        fields = line.split(" ")
        verb = fields[0].upper()
        if verb == "QUIT":
            return REPLY_OK, True
        handler = self._handlers.get(verb)
        if handler is None:
            return REPLY_UNKNOWN, False
        log.debug("management: %s", verb)
        return await self._run_handler(verb, handler, fields), False

    async def _run_handler(self, verb, handler, fields):
        try:
            reply = handler(fields)
            if inspect.isawaitable(reply):
                async with asyncio.timeout(self._handler_timeout):    # in this task, unlike wait_for
                    reply = await reply
        except ManagementSyntaxError:
            return REPLY_SYNTAX
        except ManagementFailure as failure:
            return f"{REPLY_FAILED}: {failure.detail}" if failure.detail else REPLY_FAILED
        except asyncio.TimeoutError:
            log.error("management: %s did not finish within %.0f s", verb, self._handler_timeout)
            return REPLY_FAILED
        except Exception:
            log.exception("management: %s failed", verb)
            return REPLY_FAILED
        if reply is not None and (not isinstance(reply, str) or "\r" in reply or "\n" in reply):
            log.error("management: %s returned an invalid reply %r", verb, reply)
            return REPLY_FAILED
        return reply

    async def _write(self, writer, reply):
        writer.write(reply.encode("utf-8") + b"\r\n")
        async with asyncio.timeout(self._write_timeout):
            await writer.drain()

    async def _close(self, writer, reply):
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
            await self._write(writer, reply)
        await self._finish(writer)

    async def _finish(self, writer):
        # Flush what is buffered, but never wait longer than a write may on a client that
        # does not read.
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), self._write_timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError, ConnectionError):
            writer.transport.abort()


def _bind_private_unix_socket(path):
    """A listening UNIX socket at `path`, mode 0600 from the moment it is reachable there.

    It is bound inside a fresh 0700 directory next to `path`, made 0600, then renamed over
    whatever is at `path`, so no other user ever sees it with a wider mode (the process umask
    is not touched: other threads may be creating files)."""
    directory = os.path.dirname(os.path.abspath(path))
    _refuse_directory(path)
    staging = tempfile.mkdtemp(prefix=".m", dir=directory)
    staged = os.path.join(staging, "s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(os.fsencode(staged)) > _SUN_PATH_MAX:
            os.rmdir(staging)
            staging = None
            _bind_in_place(sock, path)
        else:
            sock.bind(staged)
            os.chmod(staged, 0o600)
            os.replace(staged, path)
        sock.listen(16)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    finally:
        if staging is not None:
            with contextlib.suppress(OSError):
                os.unlink(staged)
            with contextlib.suppress(OSError):
                os.rmdir(staging)
    return sock


def _bind_in_place(sock, path):
    # Too long a path for the staging directory: bind at the path itself, then chmod. The
    # node runs with umask 0077, so the file is never wider than 0700 meanwhile.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock.bind(path)
    os.chmod(path, 0o600)


def _refuse_directory(path):
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            raise IsADirectoryError(f"management: {path} is a directory")
