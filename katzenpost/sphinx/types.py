"""Plain value types of the Sphinx API (path hops, unwrap results), shared by the compiled
API and the pure-Python reference. No behaviour here."""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PathHop:
    """One hop of a path: node `id` (32 bytes), X25519 `public_key` (32), user `commands`."""

    id: bytes
    public_key: bytes
    commands: list = field(default_factory=list)


@dataclass
class Unwrapped:
    """Result of unwrapping at one node.

    `packet`: the rewritten packet to forward (None at a terminal hop); `payload`: the
    decrypted payload at a terminal hop (else None); `replay_tag`: SHA-512/256 of the
    received group element; `commands`: routing commands in wire order.
    """

    packet: bytes | None
    payload: bytes | None
    replay_tag: bytes
    commands: list
