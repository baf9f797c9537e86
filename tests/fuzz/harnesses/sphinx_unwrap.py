"""Whole Sphinx packets into `sphinx.unwrap` and the compiled batch unwrap.

Documented outcome: an `Unwrapped` or a `SphinxError` whose code is in `errors.MESSAGES`. The batch
unwrap of the same bytes must agree with it: same status, same replay tag, and for a packet to
forward the same rewritten bytes."""
import numpy as np

from katzenpost import sphinx
from katzenpost.sphinx import batch, errors
from katzenpost.sphinx import geometry as g
from tests.fuzz.material import SPHINX_PRIVATE, counter_stream, derive

MAX_LEN = g.PACKET_LENGTH + 64
_KEYS = batch.keys_array([SPHINX_PRIVATE])
_RESULT = batch.UnwrapBatch(1)
# Codes after which the reference returns no replay tag (the group element was never hashed).
_NO_TAG = (errors.ERR_TRUNCATED, errors.ERR_UNKNOWN_VERSION)


def _single(data):
    try:
        return errors.OK, sphinx.unwrap(SPHINX_PRIVATE, data), None
    except sphinx.SphinxError as exc:
        assert exc.code in errors.MESSAGES, f"unknown status {exc.code}"
        assert (exc.replay_tag is None) == (exc.code in _NO_TAG), "replay tag presence"
        return exc.code, None, exc.replay_tag


def TestOneInput(data: bytes) -> None:
    status, out, tag = _single(data)
    rows = np.frombuffer(bytearray(data), dtype=np.uint8).reshape(1, len(data)).copy()
    batch.unwrap_batch(rows, 1, _KEYS, _RESULT)
    assert int(_RESULT.status[0]) == status, (int(_RESULT.status[0]), status)
    if status == errors.OK:
        tag = out.replay_tag
        if out.packet is not None:
            assert rows[0].tobytes() == out.packet, "batch and single unwrap rewrote differently"
    if tag is not None:
        assert _RESULT.tags[0].tobytes() == tag, "batch and single unwrap disagree on the tag"


def _hop(i, public_key, commands=()):
    return sphinx.PathHop(derive(f"node {i}"), public_key, list(commands))


def seeds():
    """Valid packets for the fuzz key: forward hops, terminal hops, a SURB reply."""
    own = sphinx.public_key(SPHINX_PRIVATE)
    other = sphinx.public_key(derive("other mix key"))
    recipient = sphinx.Recipient(derive("recipient", 64))
    payload = derive("payload", g.FORWARD_PAYLOAD_LENGTH)
    out = {}
    for hops in (1, 2, 5):
        path = [_hop(0, own, [sphinx.NodeDelay(1000)])] + [_hop(i, other) for i in range(1, hops)]
        path[-1] = sphinx.PathHop(path[-1].id, path[-1].public_key,
                                  list(path[-1].commands) + [recipient])
        out[f"forward-{hops}-hops"] = sphinx.new_packet(path, payload, counter_stream(f"p{hops}"),
                                                        counter_stream(f"f{hops}"))
    surb, _keys = sphinx.new_surb([_hop(0, own, [sphinx.SURBReply(derive("surb id", 16))])],
                                  counter_stream("surb"), counter_stream("surb filler"))
    reply, _first = sphinx.new_packet_from_surb(surb, payload)
    out["surb-reply"] = reply
    out["truncated"] = out["forward-2-hops"][: g.HEADER_LENGTH - 1]
    out["header-only"] = out["forward-1-hops"][: g.HEADER_LENGTH]
    return out
