"""The provider's HTTP user registration endpoint (`provider.registration`, EnableUserRegistrationHTTP):
no authentication, no TLS, so anyone who reaches it writes these bytes. The input is everything a
client sends on one connection, handled by the listener's connection handler over a real SQLite
user database.

Documented outcome: the handler returns (no exception escapes it; nothing is logged at ERROR)
and either closes without an answer (an incomplete request) or writes one HTTP/1.1 response
whose status is 200, 400, 404 or 500 and whose Content-Length is its body's; a 200 registered
exactly the user named in the form."""
import asyncio
import base64
import re
import urllib.parse

from katzenpost.provider.registration import MAX_BODY, RegistrationService
from katzenpost.provider.usernames import UsernamePolicy
from tests.fuzz.logs import ErrorRecords, scoped_logger
from tests.fuzz.material import derive
from tests.fuzz.streams import RecordingWriter
from tests.fuzz.userdb import fresh_storage

MAX_LEN = 8192
_LOOP = asyncio.new_event_loop()
_RESPONSE = re.compile(rb"HTTP/1\.1 (200|400|404|500) [A-Za-z ]+\r\n"
                       rb"Content-Type: text/plain; charset=utf-8\r\nContent-Length: (\d+)\r\n"
                       rb"Connection: close\r\n\r\n")


async def _connection(data: bytes) -> tuple[bytes, list[bytes]]:
    """(what the handler wrote, the users in the database afterwards)."""
    with fresh_storage() as storage:
        service = RegistrationService([], storage, UsernamePolicy())
        reader = asyncio.StreamReader(limit=2 * MAX_BODY)
        reader.feed_data(data)
        reader.feed_eof()
        writer = RecordingWriter()
        await asyncio.wait_for(service._serve(reader, writer), 10)
        return bytes(writer.sent), sorted(storage.userdb._names)  # the users it holds


def _check(sent: bytes, users: list[bytes]) -> None:
    if not sent:
        assert users == [], "a user was registered without an answer"
        return
    head = _RESPONSE.match(sent)
    assert head, f"malformed response {sent[:120]!r}"
    status, body = int(head.group(1)), sent[head.end():]
    assert int(head.group(2)) == len(body), "Content-Length differs from the body"
    if status == 200:
        assert body == b"OK\n" and len(users) == 1, (body, users)
    else:
        assert users == [], f"status {status} but users {users!r} were written"


def TestOneInput(data: bytes) -> None:
    errors = ErrorRecords()
    # Registration's own log and asyncio's (an exception in a connection callback) are collected.
    with scoped_logger("katzenpost.provider.user_registration_http", handler=errors, propagate=False), \
            scoped_logger("asyncio", handler=errors, propagate=False):
        sent, users = _LOOP.run_until_complete(_connection(data))
    assert not errors.records, f"logged: {errors.records[0].getMessage()}"
    _check(sent, users)


def _post(fields: dict, *, target: str = "/registration", method: str = "POST",
          length: int | None = None) -> bytes:
    body = urllib.parse.urlencode(fields).encode()
    size = len(body) if length is None else length
    return (f"{method} {target} HTTP/1.1\r\nHost: provider.example\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {size}\r\n\r\n"
            ).encode() + body


def seeds():
    link, identity = derive("registration link"), derive("registration identity")
    base = {"version": "0", "command": "register_link_key", "user": "alice", "link_key": link.hex()}
    both = dict(base, command="register_link_and_identity_key",
                link_key=base64.b64encode(link).decode(), identity_key=identity.hex())
    return {
        "link-key": _post(base),
        "link-and-identity": _post(both),
        "query-fields": b"POST /registration?" + urllib.parse.urlencode(base).encode()
                        + b" HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "get": b"GET /registration HTTP/1.1\r\n\r\n",
        "not-found": _post(base, target="/elsewhere"),
        "bad-length": _post(base, length=-5),
        "short-body": _post(base, length=400),
        "unknown-command": _post(dict(base, command="frobnicate")),
        "bad-user": _post(dict(base, user="a b\u00e9")),
    }
