"""The management socket's provider commands (ADD_USER … USER_LINK) with the reference's exact
replies. Only the reply text: the management server frames it (CRLF). SEND_RATE and SEND_BURST
are node commands (server/node_commands.py), answered on every node."""
from __future__ import annotations

import base64
import binascii
import logging

from katzenpost.provider.usernames import InvalidUsername, UsernamePolicy
from katzenpost.provider.userdb.base import KEY_LENGTH, UserDBError

OK = "250 Requested action ok, completed"
UNRECOGNISED = "500 Syntax error, command unrecognised"
BAD_ARGUMENTS = "501 Syntax error in parameters or arguments"
FAILED = "554 Transaction failed"

log = logging.getLogger("katzenpost.provider.mgmt")


class BadArguments(Exception):
    """→ 501."""


def parse_public_key(text: str) -> bytes:
    """A 32-byte X25519 public key in hex (tried first) or base64."""
    for decode in (bytes.fromhex, lambda t: base64.b64decode(t, validate=True)):
        try:
            raw = decode(text)
        except (ValueError, binascii.Error):
            continue
        if len(raw) == KEY_LENGTH:
            return raw
    raise BadArguments(f"not a {KEY_LENGTH}-byte key in hex or base64")


class UserCommands:
    """`await handle(fields)`: fields = the management line split on single spaces."""

    def __init__(self, storage, policy: UsernamePolicy):
        """`storage`: `.userdb`, `.spool` and `async run(fn, *args)`, which runs a blocking
        storage call off the I/O thread (provider.storage.Storage)."""
        self._storage, self._policy = storage, policy
        self._handlers = {
            "ADD_USER": (3, 3, self._add_user), "UPDATE_USER": (3, 3, self._update_user),
            "REMOVE_USER": (2, 2, self._remove_user), "SET_USER_IDENTITY": (2, 3, self._set_identity),
            "REMOVE_USER_IDENTITY": (2, 2, self._remove_identity),
            "USER_IDENTITY": (2, 2, self._user_identity), "USER_LINK": (2, 2, self._user_link),
        }

    @property
    def verbs(self) -> tuple[str, ...]:
        return tuple(self._handlers)

    async def handle(self, fields: list[str]) -> str:
        if not fields:
            return UNRECOGNISED
        entry = self._handlers.get(fields[0].upper())
        if entry is None:
            return UNRECOGNISED
        low, high, handler = entry
        if not low <= len(fields) <= high:
            return BAD_ARGUMENTS
        try:
            return await handler(*fields[1:])
        except BadArguments as err:
            log.debug("%s: %s", fields[0].upper(), err)
            return BAD_ARGUMENTS
        except UserDBError as err:
            log.info("%s failed: %s", fields[0].upper(), err)
            return FAILED

    def _user(self, name: str) -> bytes:
        try:
            return self._policy.fix_user(name.encode("utf-8", "surrogateescape"))
        except InvalidUsername as err:
            raise BadArguments(str(err)) from None

    async def _add_user(self, name: str, key: str, update: bool = False) -> str:
        user, link = self._user(name), parse_public_key(key)
        await self._storage.run(self._storage.userdb.add, user, link, update)
        return OK

    async def _update_user(self, name: str, key: str) -> str:
        return await self._add_user(name, key, update=True)

    async def _remove_user(self, name: str) -> str:
        user = self._user(name)
        await self._storage.run(self._storage.userdb.remove, user)
        try:
            await self._storage.run(self._storage.spool.remove, user)
        except Exception as err:  # the user is gone; a stale spool is vacuumed at the next start
            log.warning("REMOVE_USER: failed to remove the spool: %s", err)
        return OK

    async def _set_identity(self, name: str, key: str | None = None) -> str:
        user = self._user(name)
        identity = None if key is None else parse_public_key(key)
        await self._storage.run(self._storage.userdb.set_identity, user, identity)
        return OK

    async def _remove_identity(self, name: str) -> str:
        return await self._set_identity(name)

    async def _user_identity(self, name: str) -> str:
        key = await self._storage.run(self._storage.userdb.identity, self._user(name))
        return f"250 {base64.b64encode(key).decode()}"

    async def _user_link(self, name: str) -> str:
        key = await self._storage.run(self._storage.userdb.link, self._user(name))
        return f"250 {base64.b64encode(key).decode()}"
