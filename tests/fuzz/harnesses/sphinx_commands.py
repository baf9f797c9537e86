"""Routing slots behind a valid header MAC: the compiled unwrap's command decoding checked against
the Python codec (`commands.iter_parse`) on the same 82 bytes.

Each input is a slot (82 bytes) and a payload; the harness builds a one-hop header whose decrypted
slot is exactly those bytes (the compiled core's header creation with a full-length command
block), so the fuzzer reaches the command decoder that random packets never get past the MAC to.
Documented outcome: `Unwrapped` or `SphinxError`, with the status the reference's parse order
gives (duplicate NextNodeHop / SURBReply, invalid command) and, when it unwraps, the same commands
and payload as the codec; the batch unwrap's flags and fields agree too."""
import numpy as np

from katzenpost import sphinx
from katzenpost._core import sphinx as core
from katzenpost.sphinx import batch, commands, errors
from katzenpost.sphinx import geometry as g
from tests.fuzz.data import Reader
from tests.fuzz.material import SPHINX_PRIVATE, derive

MAX_LEN = g.PER_HOP_ROUTING_INFO_LENGTH + 512
_PUBLIC = sphinx.public_key(SPHINX_PRIVATE)
_EPHEMERAL = derive("sphinx_commands ephemeral")
_ID = derive("sphinx_commands node")
_FILLER = derive("sphinx_commands filler", (g.NR_HOPS - 1) * g.PER_HOP_ROUTING_INFO_LENGTH)
_KEYS = batch.keys_array([SPHINX_PRIVATE])
_RESULT = batch.UnwrapBatch(1)
_FLAGS = {commands.NextNodeHop: batch.FLAG_NEXT_HOP, commands.Recipient: batch.FLAG_RECIPIENT,
          commands.SURBReply: batch.FLAG_SURB_REPLY, commands.NodeDelay: batch.FLAG_NODE_DELAY}
_FATAL_DUPLICATE = {commands.NextNodeHop: errors.ERR_DUPLICATE_NEXT_NODE,
                    commands.SURBReply: errors.ERR_DUPLICATE_SURB_REPLY}


def packet_for_slot(slot: bytes, payload: bytes) -> bytes:
    header, sprp_keys = core.create_header(_EPHEMERAL, _ID, _PUBLIC, slot, [len(slot)], _FILLER)
    return header + core.encrypt_payload(sprp_keys, payload)


def expected(slot: bytes):
    """(status, first command of each type, flags) in the reference's parse order."""
    first, flags = {}, 0
    try:
        for cmd in commands.iter_parse(slot):
            kind = type(cmd)
            if kind in first:
                flags |= batch.FLAG_DUPLICATE
                if kind in _FATAL_DUPLICATE:
                    return _FATAL_DUPLICATE[kind], first, flags
                continue
            first[kind] = cmd
            flags |= _FLAGS[kind]
    except sphinx.SphinxError as exc:
        assert exc.code == errors.ERR_INVALID_COMMAND, exc.code
        return errors.ERR_INVALID_COMMAND, first, flags
    return errors.OK, first, flags


def _check_single(packet, slot, payload, status):
    try:
        out = sphinx.unwrap(SPHINX_PRIVATE, packet)
    except sphinx.SphinxError as exc:
        assert exc.code == status, f"unwrap gave {exc.code}, the codec expects {status}"
        return
    assert status == errors.OK, f"unwrap succeeded, the codec expects {status}"
    assert out.commands == commands.parse(slot), "unwrap and the codec parse different commands"
    kinds = {type(c) for c in out.commands}
    if commands.NextNodeHop in kinds:
        assert out.payload is None and len(out.packet) == len(packet)
    elif commands.SURBReply in kinds:
        assert out.payload == bytes(g.PAYLOAD_TAG_LENGTH) + payload
    else:
        assert out.payload == payload, "terminal payload differs from what was sent"


def _check_batch(packet, status, first, flags):
    rows = np.frombuffer(packet, dtype=np.uint8).reshape(1, len(packet)).copy()
    batch.unwrap_batch(rows, 1, _KEYS, _RESULT)
    assert int(_RESULT.status[0]) == status, (int(_RESULT.status[0]), status)
    if status != errors.OK:
        return
    assert int(_RESULT.flags[0]) == flags, (int(_RESULT.flags[0]), flags)
    if commands.NextNodeHop in first:
        assert _RESULT.next_hop[0].tobytes() == first[commands.NextNodeHop].id
    if commands.Recipient in first:
        assert _RESULT.recipient[0].tobytes() == first[commands.Recipient].id
    if commands.SURBReply in first:
        assert _RESULT.surb_id[0].tobytes() == first[commands.SURBReply].id
    if commands.NodeDelay in first:
        assert int(_RESULT.delay_ms[0]) == first[commands.NodeDelay].delay


def TestOneInput(data: bytes) -> None:
    r = Reader(data)
    slot = r.exact(g.PER_HOP_ROUTING_INFO_LENGTH)
    payload = r.rest()
    packet = packet_for_slot(slot, payload)
    status, first, flags = expected(slot)
    _check_single(packet, slot, payload, status)
    _check_batch(packet, status, first, flags)


def seeds():
    """Slots the reference writes (each command alone and in combination) plus a few broken ones."""
    nh = commands.NextNodeHop(derive("next", 32), derive("mac", 16)).to_bytes()
    rc = commands.Recipient(derive("recipient", 64)).to_bytes()
    sr = commands.SURBReply(derive("surb", 16)).to_bytes()
    nd = commands.NodeDelay(1234).to_bytes()
    slots = {"empty": b"", "recipient": rc, "recipient-surb": rc + sr, "delay-next": nd + nh,
             "delay-recipient": nd + rc, "next-next": nh + nh, "surb-surb": sr + sr,
             "delay-delay": nd + nd + rc, "unknown-id": b"\x7f", "junk-after-null": b"\x00\x01",
             "truncated-recipient": b"\x02" + bytes(10)}
    payload = derive("payload", 64)
    return {name: slot.ljust(g.PER_HOP_ROUTING_INFO_LENGTH, b"\0")[:g.PER_HOP_ROUTING_INFO_LENGTH]
            + payload for name, slot in slots.items()}
