"""The extern user database: the reference's form-encoded HTTP POSTs to `<ProviderURL>/<endpoint>`
(isvalid, exists, getidkey) with JSON answers; every mutation is refused."""
from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.parse
import urllib.request

from katzenpost.provider.userdb.base import NoIdentity, NotSupported, UserDB, UserDBError

log = logging.getLogger("katzenpost.provider.userdb")

REQUEST_TIMEOUT = 10.0  # seconds; a silent authentication service must not hold a worker forever
MAX_ANSWER_BYTES = 64 * 1024
_READ_ONLY = "Not implemented: External authentication is enabled, you can not modify users"
_NOT_IMPLEMENTED = "Not implemented: Support not implemented yet"


class ExternUserDB(UserDB):
    supports_mutation = False

    def __init__(self, provider_url: str, *, timeout: float = REQUEST_TIMEOUT):
        # A plain "/" join, as the reference does (a trailing slash in the URL gives "//").
        self._base = provider_url
        self._timeout = timeout

    def _post(self, endpoint: str, fields: dict[str, str]):
        body = urllib.parse.urlencode(fields).encode("ascii")
        request = urllib.request.Request(f"{self._base}/{endpoint}", data=body, method="POST",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                if response.status != 200:
                    return None
                return json.loads(response.read(MAX_ANSWER_BYTES))
        except urllib.error.HTTPError:
            return None  # only HTTP 200 counts
        except (OSError, ValueError) as err:
            log.warning("extern userdb: %s request failed: %s", endpoint, err)
            return None

    def _answer(self, endpoint: str, fields: dict[str, str]):
        answer = self._post(endpoint, fields)
        return answer.get(endpoint) if isinstance(answer, dict) else None

    def exists(self, user: bytes) -> bool:
        return self._answer("exists", {"user": _text(user)}) is True

    def is_valid(self, user: bytes, link_key: bytes) -> bool:
        key = base64.b64encode(bytes(link_key)).decode("ascii")
        return self._answer("isvalid", {"user": _text(user), "key": key}) is True

    def identity(self, user: bytes) -> bytes:
        value = self._answer("getidkey", {"user": _text(user)})
        try:
            key = bytes.fromhex(value) if isinstance(value, str) else b""
        except ValueError:
            key = b""
        if len(key) != 32:
            raise NoIdentity()  # the reference maps every lookup failure to "no identity"
        return key

    def link(self, user: bytes) -> bytes:
        raise NotSupported(_NOT_IMPLEMENTED)

    def set_identity(self, user: bytes, identity_key: bytes | None) -> None:
        raise NotSupported(_NOT_IMPLEMENTED)

    def add(self, user: bytes, link_key: bytes, update: bool = False) -> None:
        raise NotSupported(_READ_ONLY)

    def remove(self, user: bytes) -> None:
        raise NotSupported(_READ_ONLY)


def _text(user: bytes) -> str:
    try:
        return bytes(user).decode("utf-8")
    except UnicodeDecodeError:
        raise UserDBError("userdb: the extern backend needs UTF-8 user names") from None
