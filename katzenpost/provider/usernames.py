"""Username and recipient normalisation, as the reference provider does it: PRECIS
UsernameCaseMapped by default, UsernameCasePreserved with CaseSensitiveRecipients, raw bytes
with BinaryRecipients; an optional recipient delimiter (`alice+tag` → `alice`)."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from katzenpost.config import username_case_mapped

MAX_USERNAME_SIZE = 64  # bytes, the reference's MaxUsernameSize and RecipientID length


class InvalidUsername(ValueError):
    """A name that cannot be a user of this provider (empty, too long, not UTF-8, not PRECIS)."""


def check_username_bytes(user: bytes) -> bytes:
    """The stored form must be 1..64 bytes (the reference only checked this as a tautology)."""
    if not 0 < len(user) <= MAX_USERNAME_SIZE:
        raise InvalidUsername(f"username must be 1..{MAX_USERNAME_SIZE} bytes, got {len(user)}")
    return user


def username_case_preserved(name: str) -> str:
    """PRECIS UsernameCasePreserved: width mapping and NFC, the same character checks."""
    username_case_mapped(name)  # raises ValueError on a disallowed character
    # Width mapping: a <wide>/<narrow> compatibility character's NFKC form is its mapping.
    widths = ("<wide>", "<narrow>")
    mapped = (unicodedata.normalize("NFKC", c) if unicodedata.decomposition(c).startswith(widths) else c
              for c in name)
    return unicodedata.normalize("NFC", "".join(mapped))


@dataclass(frozen=True)
class UsernamePolicy:
    """The Provider section's recipient options."""

    binary_recipients: bool = False
    case_sensitive: bool = False
    recipient_delimiter: str = ""

    @classmethod
    def from_config(cls, provider_cfg) -> "UsernamePolicy":
        return cls(provider_cfg.binary_recipients, provider_cfg.case_sensitive_recipients,
                   provider_cfg.recipient_delimiter)

    def fix_user(self, raw: bytes) -> bytes:
        """The fix-up of a client's AD and of management user names (raises InvalidUsername)."""
        raw = bytes(raw)
        if self.binary_recipients:
            return check_username_bytes(raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidUsername("username is not UTF-8") from None
        try:
            fixed = username_case_preserved(text) if self.case_sensitive else username_case_mapped(text)
        except ValueError as err:
            raise InvalidUsername(f"username is not a PRECIS username: {err}") from None
        return check_username_bytes(fixed.encode("utf-8"))

    def fix_recipient(self, recipient: bytes) -> bytes:
        """A packet's 64-byte recipient → the spool user: trailing NULs trimmed, fix-up, delimiter."""
        recipient = bytes(recipient)
        if self.binary_recipients:
            return check_username_bytes(recipient)
        user = self.fix_user(recipient.rstrip(b"\x00"))
        delimiter = self.recipient_delimiter.encode("utf-8")
        if delimiter:
            head, found, _ = user.partition(delimiter)
            if found and head:
                user = head
        return user
