"""Helpers for the client and decoy tests: the test documents' mix private keys and a hop-by-hop
walk of a packet through the real Sphinx unwrap."""
import hashlib

from _pki_fixtures import x25519_public
from katzenpost import sphinx
from katzenpost.sphinx import NextNodeHop, NodeDelay


def mix_private_key(node, public_key):
    """The private mix key behind `public_key` of a `_pki_fixtures` node (any epoch it lists)."""
    for epoch in node.mix_keys:
        private = hashlib.sha256(f"mixkey:{node.name}:{epoch}".encode()).digest()
        if x25519_public(private) == public_key:
            return private
    raise AssertionError(f"no test mix key of {node.name} matches")


def walk(packet, path):
    """Unwrap `packet` at every hop of `path` with the real keys, checking each forward hop's
    commands (NodeDelay of the path, NextNodeHop = the next hop). Returns the terminal Unwrapped."""
    for index, (node, hop) in enumerate(zip(path.nodes, path.hops)):
        result = sphinx.unwrap(mix_private_key(node, hop.public_key), packet)
        if index == len(path.hops) - 1:
            assert result.packet is None
            return result
        kinds = {type(c): c for c in result.commands}
        assert set(kinds) == {NodeDelay, NextNodeHop}
        assert kinds[NodeDelay].delay == path.delays_ms[index]
        assert kinds[NextNodeHop].id == path.hops[index + 1].id
        packet = result.packet
    raise AssertionError("empty path")
