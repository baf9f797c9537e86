"""Management-socket sessions (`server.management`): the line protocol, the node commands
(`server.node_commands`) and the provider's user commands (`provider.user_commands`) over a
real SQLite user database.

The input is everything a client sends on one connection. Documented outcome: the session ends
normally; every reply is one `<3-digit code> <text>` line; no handler fails with an unexpected
exception (the server would log it at ERROR and answer 554)."""
import asyncio
import atexit
import os
import re
import shutil
import tempfile

from katzenpost.provider.user_commands import UserCommands
from katzenpost.provider.usernames import UsernamePolicy
from katzenpost.server.management import ManagementServer
from katzenpost.server.node_commands import register_node_commands
from tests.fuzz.logs import ErrorRecords, scoped_logger
from tests.fuzz.material import derive
from tests.fuzz.streams import RecordingWriter
from tests.fuzz.userdb import fresh_storage

MAX_LEN = 8192  # above the 4096-byte line limit
_REPLY = re.compile(r"[0-9]{3}( [^\r\n]*)?")
_LOOP = asyncio.new_event_loop()
_DIR = tempfile.mkdtemp(prefix="kp-fuzz-mgmt-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
atexit.register(shutil.rmtree, _DIR, True)


_ERRORS = ErrorRecords()


class _Control:
    identifier = "fuzz.example.org"
    is_provider = True

    def __init__(self, user_commands):
        self.user_commands = user_commands

    def request_shutdown(self, reason):
        pass

    def set_send_rate(self, n):
        pass

    def set_send_burst(self, n):
        pass

    def status(self):
        return {"identifier": self.identifier, "epoch": 1, "queues": {"ingress": 0}}


async def _start():
    server = ManagementServer(os.path.join(_DIR, "management.sock"), _Control.identifier,
                              idle_timeout=5.0, handler_timeout=5.0)
    await server.start()
    return server


_SERVER = _LOOP.run_until_complete(_start())


async def _session(data: bytes) -> bytes:
    with fresh_storage() as storage:
        commands = UserCommands(storage, UsernamePolicy())
        _SERVER._handlers.clear()
        register_node_commands(_SERVER, _Control(commands))
        reader = asyncio.StreamReader(limit=_SERVER._max_line + 2)
        reader.feed_data(data)
        reader.feed_eof()
        writer = RecordingWriter()
        await asyncio.wait_for(_SERVER._on_connection(reader, writer), 10)
        return bytes(writer.sent)


def TestOneInput(data: bytes) -> None:
    del _ERRORS.records[:]
    # the handlers' errors are collected (not printed) for this input only
    with scoped_logger("katzenpost.server.management", handler=_ERRORS, propagate=False), \
            scoped_logger("katzenpost.provider.mgmt", handler=_ERRORS, propagate=False):
        sent = _LOOP.run_until_complete(_session(data))
    assert not _ERRORS.records, f"logged: {_ERRORS.records[0].getMessage()}"
    lines = sent.split(b"\r\n")
    assert lines[-1] == b"", "reply not terminated by CRLF"
    for line in lines[:-1]:
        assert _REPLY.fullmatch(line.decode("utf-8")), f"malformed reply {line[:80]!r}"


def seeds():
    link, identity = derive("mgmt link").hex(), derive("mgmt identity").hex()
    import base64
    b64 = base64.b64encode(derive("mgmt identity")).decode()
    return {
        "status": b"STATUS\r\nstatus\n",
        "rates": b"SEND_RATE 100\nSEND_BURST 00018446744073709551615\nSEND_RATE -1\nQUIT\n",
        "users": (f"ADD_USER alice {link}\nUSER_LINK alice\nSET_USER_IDENTITY alice {b64}\n"
                  f"USER_IDENTITY alice\nUPDATE_USER alice {identity}\nREMOVE_USER_IDENTITY alice\n"
                  f"REMOVE_USER alice\nUSER_LINK alice\n").encode(),
        "unknown": b"HELLO\r\n\r\nadd_user Bob\n",
        "shutdown": b"SHUTDOWN\n",
        "long": b"STATUS " + b"x" * 5000 + b"\n",
    }
