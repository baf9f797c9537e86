"""The optional HTTP user registration listeners (EnableUserRegistrationHTTP), as the reference:
`POST /registration` with form fields version=0, command, user and keys registers a user. There
is no authentication and no TLS: expose it only where anyone may register."""
from __future__ import annotations

import asyncio
import logging
import urllib.parse

from katzenpost.log import notice
from katzenpost.provider.user_commands import BadArguments, parse_public_key
from katzenpost.provider.usernames import InvalidUsername, UsernamePolicy
from katzenpost.provider.userdb.base import NoIdentity, UserDBError

MAX_HEAD = 16 * 1024
MAX_BODY = 16 * 1024
READ_TIMEOUT = 10.0
log = logging.getLogger("katzenpost.provider.user_registration_http")


class Refused(Exception):
    """→ HTTP 500 (the reference answers every refusal with it), or the given status."""

    def __init__(self, reason: str, status: int = 500):
        super().__init__(reason)
        self.status = status


def parse_request(head: bytes) -> tuple[str, str, dict[str, str]]:
    """(method, path, headers) of an HTTP/1.x request head."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(version)
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError(line)
            headers[name.strip().lower()] = value.strip()
    except ValueError:
        raise Refused("malformed request", 400) from None
    return method, target, headers


class RegistrationService:
    def __init__(self, addresses, storage, policy: UsernamePolicy):
        self._addresses, self._storage, self._policy = tuple(addresses), storage, policy
        self._servers: list[asyncio.AbstractServer] = []

    async def start(self) -> None:
        for address in self._addresses:
            host, _, port = address.rpartition(":")
            server = await asyncio.start_server(self._serve, host.strip("[]"), int(port))
            self._servers.append(server)
            notice(log, "Listening on: %s", address)

    async def halt(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()
        self._servers = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await asyncio.wait_for(self._exchange(reader), READ_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            writer.close()
            return
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Internal Server Error")
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    async def _exchange(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            return 400, b"request head too long\n"
        try:
            method, target, headers = parse_request(head[:-4])
            length = int(headers.get("content-length", "0") or 0)
            if not 0 <= length <= MAX_BODY:
                raise Refused("request body too long", 400)
            body = await reader.readexactly(length)
            await self._register(method, target, body)
        except Refused as err:
            log.debug("registration refused: %s", err)
            return err.status, f"{err}\n".encode()
        except ValueError:
            return 400, b"bad Content-Length\n"
        return 200, b"OK\n"

    async def _register(self, method: str, target: str, body: bytes) -> str:
        url = urllib.parse.urlsplit(target)
        if url.path != "/registration":
            raise Refused("not found", 404)
        if method != "POST":
            raise Refused("method must be POST")
        fields = urllib.parse.parse_qs(url.query)
        fields.update(urllib.parse.parse_qs(body.decode("utf-8", "replace")))
        field = lambda name: fields.get(name, [""])[0]  # noqa: E731
        if field("version") != "0" or not field("command") or not field("user"):
            raise Refused("version must be 0, command and user are required")
        try:
            user = self._policy.fix_user(field("user").encode("utf-8"))
            link = parse_public_key(field("link_key"))
            identity = None
            if field("command") == "register_link_and_identity_key":
                identity = parse_public_key(field("identity_key"))
            elif field("command") != "register_link_key":
                raise Refused(f"unknown command {field('command')!r}")
        except (InvalidUsername, BadArguments) as err:
            raise Refused(str(err)) from None
        await self._store(user, link, identity)
        name = user.decode("utf-8", "backslashreplace")
        notice(log, "HTTP Registration created user with %s: %s",
               "link and identity key" if identity else "link key", name)
        return name

    async def _store(self, user: bytes, link: bytes, identity: bytes | None) -> None:
        run, userdb = self._storage.run, self._storage.userdb
        try:
            if identity is not None and await self._has_identity(user):
                raise Refused("user already has an identity key")
            await run(userdb.add, user, link, False)
            if identity is not None:
                await run(userdb.set_identity, user, identity)
        except UserDBError as err:
            raise Refused(f"registration failed: {err}") from None

    async def _has_identity(self, user: bytes) -> bool:
        try:
            await self._storage.run(self._storage.userdb.identity, user)
        except (NoIdentity, UserDBError):
            return False
        return True
