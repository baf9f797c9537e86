"""The user database interface (link keys and identity keys by username) and its errors.
Backends are synchronous and thread-safe; the provider calls them from its storage executor."""
from __future__ import annotations

import abc

from katzenpost.provider.usernames import check_username_bytes

KEY_LENGTH = 32  # X25519 link and identity public keys


class UserDBError(Exception):
    """A user database operation failed (the management reply is 554)."""


class NoSuchUser(UserDBError):
    def __init__(self, message: str = "userdb: no such user"):
        super().__init__(message)


class NoIdentity(UserDBError):
    def __init__(self, message: str = "userdb: no identity key set for user"):
        super().__init__(message)


class UserExists(UserDBError):
    def __init__(self, message: str = "userdb: user already exists"):
        super().__init__(message)


class NotSupported(UserDBError):
    """The backend refuses this operation (the extern user database refuses every mutation)."""


class SchemaMismatch(UserDBError):
    """The database was not created by the schema this code speaks."""


def check_key(key: bytes, what: str = "key") -> bytes:
    key = bytes(key)
    if len(key) != KEY_LENGTH:
        raise UserDBError(f"userdb: {what} must be {KEY_LENGTH} bytes, got {len(key)}")
    return key


def check_user(user: bytes) -> bytes:
    try:
        return check_username_bytes(bytes(user))
    except ValueError as err:
        raise UserDBError(f"userdb: {err}") from None


class UserDB(abc.ABC):
    """Usernames are bytes (already fixed up); keys are 32-byte X25519 public keys."""

    supports_mutation = True

    @abc.abstractmethod
    def exists(self, user: bytes) -> bool: ...

    @abc.abstractmethod
    def is_valid(self, user: bytes, link_key: bytes) -> bool:
        """True iff the user exists with this link key (compared in constant time)."""

    @abc.abstractmethod
    def link(self, user: bytes) -> bytes:
        """The link key (NoSuchUser)."""

    @abc.abstractmethod
    def add(self, user: bytes, link_key: bytes, update: bool = False) -> None:
        """Add (UserExists if present) or, with update, replace the link key (NoSuchUser)."""

    @abc.abstractmethod
    def set_identity(self, user: bytes, identity_key: bytes | None) -> None:
        """Set, or with None clear, the identity key (NoSuchUser)."""

    @abc.abstractmethod
    def identity(self, user: bytes) -> bytes:
        """The identity key (NoSuchUser, NoIdentity)."""

    @abc.abstractmethod
    def remove(self, user: bytes) -> None:
        """Delete the user (NoSuchUser)."""

    def close(self) -> None:
        """Release the backend's resources; idempotent."""
