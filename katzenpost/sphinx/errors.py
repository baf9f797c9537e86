"""Sphinx errors: the exception type and the status-code table shared with the compiled core.

Messages are the Go reference's, word for word; the codes are what `_core.sphinx` returns.
"""

OK = 0
ERR_TRUNCATED = 1
ERR_UNKNOWN_VERSION = 2
ERR_MAC_MISMATCH = 3
ERR_INVALID_COMMAND = 4
ERR_DUPLICATE_NEXT_NODE = 5
ERR_DUPLICATE_SURB_REPLY = 6
ERR_TRUNCATED_PAYLOAD = 7
ERR_PAYLOAD_AUTH = 8
ERR_INTERNAL = 9  # libcrypto failed (out of memory): not a property of the packet

MESSAGES = {
    ERR_TRUNCATED: "sphinx: invalid packet, truncated",
    ERR_UNKNOWN_VERSION: "sphinx: invalid packet, unknown version",
    ERR_MAC_MISMATCH: "sphinx: invalid packet, MAC mismatch",
    ERR_INVALID_COMMAND: "sphinx: invalid per-hop command",
    ERR_DUPLICATE_NEXT_NODE: "sphinx: invalid packet, > 1 next_node",
    ERR_DUPLICATE_SURB_REPLY: "sphinx: invalid packet, > 1 surb_reply",
    ERR_TRUNCATED_PAYLOAD: "sphinx: truncated payload",
    ERR_PAYLOAD_AUTH: "sphinx: payload auth failed",
    ERR_INTERNAL: "sphinx: internal error in libcrypto",
}

# Messages of packet creation and SURB handling (no status code: never produced by unwrap).
INVALID_PATH = "sphinx: invalid path"
INVALID_COMMANDS_NEXT_NODE = "sphinx: invalid commands, NextNodeHop"
INVALID_COMMANDS_OVERSIZED = "sphinx: invalid commands, oversized serialized block"
INVALID_COMMANDS_CAPACITY = "sphinx: invalid commands, insufficient remaining capacity"
INVALID_SURB = "sphinx: invalid packet, truncated SURB"
INVALID_SURB_KEYS = "sphinx: invalid SURB decryption keys"


class SphinxError(Exception):
    """A Sphinx operation failed; `replay_tag` is set whenever the reference returns one."""

    def __init__(self, message, replay_tag=None, code=None):
        super().__init__(message)
        self.replay_tag = replay_tag
        self.code = code

    @classmethod
    def from_code(cls, code, replay_tag=None):
        return cls(MESSAGES.get(code, f"sphinx: unknown error code {code}"), replay_tag, code)
