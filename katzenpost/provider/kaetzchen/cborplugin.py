"""The CBOR plugin client (the reference's master plugin system): launch each configured command
MaxConcurrency times with `-<key> <value>` arguments, read its UNIX socket path from the first
stdout line, POST CBOR to /request and /parameters over HTTP on that socket. Unlike the reference,
a crashed plugin is restarted with back-off and a silent one times out: the node never hangs."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Mapping

import cbor2

from katzenpost.provider.kaetzchen.base import KaetzchenService
from katzenpost.tasks import cancel_and_wait
from katzenpost.provider.kaetzchen.http11 import HTTPError, ResponseParser, build_post

REQUEST_TIMEOUT = 5.0      # the reference's HTTP client timeout, per request
STARTUP_TIMEOUT = 10.0     # to print the socket path
HALT_TIMEOUT = 5.0         # between SIGTERM and SIGKILL
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 60.0
MAX_SOCKET_PATH = 4096


class PluginError(Exception):
    """A plugin could not be started, or one request to it failed (the request is dropped)."""


def plugin_argv(command: str, config: Mapping[str, str]) -> list[str]:
    argv = [command]
    for key, value in config.items():
        argv += [f"-{key}", str(value)]
    return argv


def encode_request(request_id: int, payload: bytes, has_surb: bool) -> bytes:
    # Field names and order as the reference's request structure.
    return cbor2.dumps({"ID": request_id, "Payload": bytes(payload), "HasSURB": bool(has_surb)})


def decode_response(body: bytes) -> bytes:
    try:
        response = cbor2.loads(body)
    except Exception as err:  # cbor2 raises several types on garbage
        raise PluginError(f"undecodable CBOR response: {err}") from None
    if not isinstance(response, dict) or not isinstance(response.get("Payload", b""), bytes):
        raise PluginError("CBOR response is not a map with a byte-string Payload")
    return response.get("Payload", b"")


def decode_parameters(body: bytes) -> dict[str, str]:
    try:
        params = cbor2.loads(body) if body else None
    except Exception as err:
        raise PluginError(f"undecodable CBOR parameters: {err}") from None
    if params is None:
        return {}
    if not isinstance(params, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in params.items()):
        raise PluginError("parameters are not a text-to-text CBOR map")
    return params


def _prctl():
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl     # resolved here, not in the child
    except (OSError, AttributeError):                       # not Linux: no parent-death signal
        return None


_PRCTL = _prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_the_provider() -> None:
    """In the plugin child, before exec: SIGTERM when the provider dies, even by kill -9, so a
    crashed provider never leaves its plugins running (they are in their own session, so no
    terminal or process-group signal reaches them). The event loop's thread forks them, and it
    lives as long as the provider."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class PluginProcess:
    """One running plugin process and its socket; `alive` until it exits."""

    def __init__(self, argv: list[str], log: logging.Logger):
        self.argv = argv
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.socket_path = ""
        self._tasks: list[asyncio.Task] = []

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, timeout: float) -> None:
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True,
                preexec_fn=_die_with_the_provider)
        except OSError as err:
            raise PluginError(f"failed to execute plugin '{self.argv[0]}': {err}") from None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except (asyncio.TimeoutError, ValueError):
            await self.stop()
            raise PluginError(f"plugin '{self.argv[0]}' printed no socket path within {timeout:g} s") from None
        path = line.decode("utf-8", "replace").strip()
        if not path or not os.path.isabs(path) or len(path) > MAX_SOCKET_PATH:
            await self.stop()
            raise PluginError(f"plugin '{self.argv[0]}' did not print an absolute socket path "
                              f"(got {path[:80]!r})")
        self.socket_path = path
        self._tasks = [asyncio.create_task(self._copy_to_log(self.proc.stderr)),
                       asyncio.create_task(self._copy_to_log(self.proc.stdout))]

    async def _copy_to_log(self, stream: asyncio.StreamReader) -> None:
        # The plugin's output goes to the log at DEBUG (and is drained, so it never blocks).
        while True:
            chunk = await stream.read(4096)
            if not chunk:
                return
            text = chunk.decode("utf-8", "replace").strip()
            if text:
                self.log.debug("%s", text)

    async def post(self, path: str, body: bytes, timeout: float) -> bytes:
        if not self.alive:
            raise PluginError("plugin is not running")
        try:
            return await asyncio.wait_for(self._exchange(path, body), timeout)
        except asyncio.TimeoutError:
            raise PluginError(f"plugin did not answer {path} within {timeout:g} s") from None
        except (OSError, HTTPError) as err:
            raise PluginError(f"{path}: {err}") from None

    async def _exchange(self, path: str, body: bytes) -> bytes:
        reader, writer = await asyncio.open_unix_connection(self.socket_path)
        try:
            writer.write(build_post(path, body))
            await writer.drain()
            parser = ResponseParser()
            while not parser.done:
                data = await reader.read(65536)
                if not data:
                    parser.feed_eof()
                    break
                parser.feed(data)
            return parser.body  # the HTTP status is not checked, as in the reference
        finally:
            writer.close()

    async def wait(self) -> int:
        return await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(self.proc.wait(), HALT_TIMEOUT)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
            except ProcessLookupError:
                pass
        if self.proc is not None and self.proc.returncode is None:
            await self.proc.wait()
        await cancel_and_wait(self._tasks, "plugin requests")
        self._tasks = []


class CBORPluginService(KaetzchenService):
    """One [[Provider.CBORPluginKaetzchen]] entry: MaxConcurrency processes, one request each."""

    def __init__(self, capability: str, endpoint: str, command: str, config: Mapping[str, str],
                 max_concurrency: int, *, request_timeout: float = REQUEST_TIMEOUT,
                 startup_timeout: float = STARTUP_TIMEOUT, backoff_initial: float = BACKOFF_INITIAL,
                 backoff_max: float = BACKOFF_MAX):
        self.capability, self.endpoint = capability, endpoint
        self.concurrency = max(1, max_concurrency)  # the reference's 0 would consume nothing
        self.argv = plugin_argv(command, config)
        self.log = logging.getLogger(f"katzenpost.provider.plugin.{capability}")
        self._timeouts = (request_timeout, startup_timeout)
        self._backoff = (backoff_initial, backoff_max)
        self._slots: list[PluginProcess] = []
        self._idle: asyncio.Queue[int] = asyncio.Queue()
        self._supervisors: list[asyncio.Task] = []
        self._params: dict[str, str] = {}
        self._halting = False
        self.restarts = 0

    @classmethod
    def from_config(cls, cfg, **kwargs) -> "CBORPluginService":
        return cls(cfg.capability, cfg.endpoint, cfg.command, cfg.config, cfg.max_concurrency, **kwargs)

    async def start(self) -> None:
        """Launch every process; an exec failure or a missing socket path aborts the start."""
        try:
            for slot in range(self.concurrency):
                process = PluginProcess(self.argv, self.log)
                self._slots.append(process)
                await process.start(self._timeouts[1])
                self._idle.put_nowait(slot)
        except BaseException:
            await self.halt()
            raise
        self._supervisors = [asyncio.create_task(self._supervise(slot)) for slot in range(self.concurrency)]
        try:
            await self.refresh_parameters()
        except PluginError as err:
            self.log.warning("plugin %s: no parameters: %s", self.capability, err)

    async def _supervise(self, slot: int) -> None:
        loop = asyncio.get_running_loop()
        delay, started = self._backoff[0], loop.time()
        while not self._halting:
            process = self._slots[slot]
            if process.alive:
                code = await process.wait()
                self.log.warning("plugin %s (process %d) exited with status %s", self.capability, slot, code)
                # A process that ran for a while earns a quick restart; a crash loop backs off.
                if loop.time() - started > self._backoff[1]:
                    delay = self._backoff[0]
            await process.stop()
            if self._halting:
                return
            self.log.warning("plugin %s (process %d): restarting in %.1f s", self.capability, slot, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff[1])
            if self._halting:
                return
            replacement = PluginProcess(self.argv, self.log)
            self._slots[slot] = replacement
            try:
                await replacement.start(self._timeouts[1])
            except PluginError as err:
                self.log.warning("plugin %s: restart failed: %s", self.capability, err)
                continue
            started = loop.time()
            self.restarts += 1

    async def on_request(self, request_id: int, payload: bytes, has_surb: bool) -> bytes | None:
        slot = await self._idle.get()
        try:
            body = await self._slots[slot].post("/request", encode_request(request_id, payload, has_surb),
                                                self._timeouts[0])
        finally:
            self._idle.put_nowait(slot)
        response = decode_response(body)
        return response or None  # an empty plugin payload means no reply (unlike the built-ins)

    async def refresh_parameters(self) -> dict[str, str]:
        """Ask the first live process; on failure the last known parameters stay advertised."""
        for process in self._slots:
            if process.alive:
                self._params = decode_parameters(await process.post("/parameters", b"", self._timeouts[0]))
                return self._params
        raise PluginError("no plugin process is running")

    def parameters(self) -> Mapping[str, object]:
        return dict(self._params)

    async def halt(self) -> None:
        self._halting = True
        await cancel_and_wait(self._supervisors, "plugin supervisors")
        self._supervisors = []
        await asyncio.gather(*(process.stop() for process in self._slots), return_exceptions=True)
