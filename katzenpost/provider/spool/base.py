"""The spool interface: a per-user FIFO of messages (1490 B) and SURB replies (16-B ID + 2064 B)
with the reference's Get(advance) semantics. Every store returns only after its commit, because
the SURB-ACK leaves right after it; a batch of stores shares one commit."""
from __future__ import annotations

import abc
from typing import Iterable, NamedTuple

from katzenpost.provider.usernames import check_username_bytes
from katzenpost.sphinx.geometry import SPRP_PAYLOAD_LENGTH, SURB_ID_LENGTH, USER_FORWARD_PAYLOAD_LENGTH


class SpoolError(Exception):
    """A spool operation failed; nothing of it was committed."""


class SpoolRecord(NamedTuple):
    user: bytes
    surb_id: bytes | None  # None for a message, the 16-byte SURB ID for a SURB reply
    body: bytes


class SpoolEntry(NamedTuple):
    message: bytes | None   # the 1490-byte message (or SURB reply payload); None when empty
    surb_id: bytes | None   # set for a SURB reply, whose 2064-byte payload is then `message`
    remaining: int          # 1 if another entry follows this one, else 0 (as the reference)

    @property
    def is_empty(self) -> bool:
        return self.message is None


EMPTY = SpoolEntry(None, None, 0)


def check_record(record: SpoolRecord) -> SpoolRecord:
    user, surb_id, body = bytes(record.user), record.surb_id, bytes(record.body)
    try:
        check_username_bytes(user)
    except ValueError as err:
        raise SpoolError(f"spool: {err}") from None
    if surb_id is None:
        if len(body) != USER_FORWARD_PAYLOAD_LENGTH:
            raise SpoolError(f"spool: a message must be {USER_FORWARD_PAYLOAD_LENGTH} bytes, got {len(body)}")
    else:
        surb_id = bytes(surb_id)
        if len(surb_id) != SURB_ID_LENGTH:
            raise SpoolError(f"spool: a SURB ID must be {SURB_ID_LENGTH} bytes, got {len(surb_id)}")
        if len(body) != SPRP_PAYLOAD_LENGTH:
            raise SpoolError(f"spool: a SURB reply must be {SPRP_PAYLOAD_LENGTH} bytes, got {len(body)}")
    return SpoolRecord(user, surb_id, body)


class Spool(abc.ABC):
    """Synchronous and thread-safe; the provider calls it from its storage executor."""

    @abc.abstractmethod
    def store_batch(self, records: Iterable[SpoolRecord]) -> None:
        """Store all records in one transaction; returns after the commit, raises SpoolError."""

    def store_message(self, user: bytes, message: bytes) -> None:
        self.store_batch([SpoolRecord(user, None, message)])

    def store_surb_reply(self, user: bytes, surb_id: bytes, payload: bytes) -> None:
        if surb_id is None:
            raise SpoolError("spool: a SURB reply needs a SURB ID")
        self.store_batch([SpoolRecord(user, surb_id, payload)])

    def store_messages(self, messages: Iterable[tuple[bytes, bytes]]) -> None:
        self.store_batch([SpoolRecord(user, None, message) for user, message in messages])

    @abc.abstractmethod
    def get(self, user: bytes, advance: bool) -> SpoolEntry:
        """With advance, delete the head first; then return the head (not deleted) and whether
        another entry follows. A SURB reply has `surb_id` set and its 2064-byte payload in
        `message`."""

    @abc.abstractmethod
    def remove(self, user: bytes) -> None:
        """Delete the user's spool (no error if it has none)."""

    @abc.abstractmethod
    def spooled_users(self) -> list[bytes]:
        """Every user that has a spool."""

    def vacuum(self, userdb) -> int:
        """Remove the spools of users the user database no longer has (run at start)."""
        removed = 0
        for user in self.spooled_users():
            if not userdb.exists(user):
                self.remove(user)
                removed += 1
        return removed

    def close(self) -> None:
        """Release the backend's resources; idempotent."""
