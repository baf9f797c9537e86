"""Batch unwrap (docs/interfaces.md "Sphinx batch unwrap"): per-packet results agree with the
single-packet API, trial decryption picks the right key, arguments are checked, and two
threads really run their batches at the same time (the GIL is released)."""
import os
import threading
import time

import numpy as np
import pytest

import katzenpost.sphinx as sphinx
from katzenpost._core import sphinx as core
from katzenpost.sphinx import NodeDelay, PathHop, Recipient, SURBReply, errors
from katzenpost.sphinx import batch
from katzenpost.sphinx import geometry as g

from sphinx_support import keypair


@pytest.fixture(scope="module")
def nodes():
    return [keypair() for _ in range(3)]


def forward_packet(nodes, payload=None):
    path = [PathHop(os.urandom(32), nodes[0][1], [NodeDelay(1234)]),
            PathHop(os.urandom(32), nodes[1][1], [Recipient(os.urandom(64))])]
    return sphinx.new_packet(path, payload if payload is not None else os.urandom(g.FORWARD_PAYLOAD_LENGTH)), path


def test_mixed_batch_matches_single_unwrap(nodes):
    (k0, _), (k1, pub1), (k2, pub2) = nodes
    fwd, fwd_path = forward_packet(nodes)
    terminal = sphinx.new_packet([PathHop(os.urandom(32), pub1, [Recipient(b"r" * 64)])], os.urandom(2048))
    surb_path = [PathHop(os.urandom(32), pub2, [Recipient(b"s" * 64), SURBReply(b"i" * 16)])]
    surb, surb_keys = sphinx.new_surb(surb_path)
    reply_payload = os.urandom(2048)
    reply = sphinx.new_packet_from_surb(surb, reply_payload)[0]
    corrupt = bytearray(fwd)
    corrupt[100] ^= 1
    bad_version = b"\x01" + fwd[1:]
    rows = [fwd, terminal, reply, bytes(corrupt), bad_version]
    packets = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), g.PACKET_LENGTH).copy()
    keys = batch.keys_array([k0, k1, k2])
    result = batch.UnwrapBatch(8)
    assert batch.unwrap_batch(packets, len(rows), keys, result) == 3

    assert list(result.status[:5]) == [0, 0, 0, errors.ERR_MAC_MISMATCH, errors.ERR_UNKNOWN_VERSION]
    assert list(result.key_index[:5]) == [0, 1, 2, -1, -1]
    assert result.flags[0] == batch.FLAG_NEXT_HOP | batch.FLAG_NODE_DELAY and result.delay_ms[0] == 1234
    assert bytes(result.next_hop[0]) == fwd_path[1].id
    assert packets[0].tobytes() == sphinx.unwrap(k0, fwd).packet
    assert result.flags[1] == batch.FLAG_RECIPIENT and bytes(result.recipient[1]) == b"r" * 64
    assert packets[1].tobytes()[476:] == sphinx.unwrap(k1, terminal).payload
    assert result.flags[2] == batch.FLAG_RECIPIENT | batch.FLAG_SURB_REPLY
    assert bytes(result.surb_id[2]) == b"i" * 16
    assert sphinx.decrypt_surb_payload(packets[2].tobytes()[460:], surb_keys) == reply_payload
    for i, row in enumerate(rows[:4]):
        assert bytes(result.tags[i]) == core.sha512_256(row[2:34])
    assert result.message(3) == "sphinx: invalid packet, MAC mismatch" and result.message(0) == ""


def test_duplicate_command_flag_and_first_delay(nodes):
    from sphinx_support import single_hop_packet

    key, pub = nodes[0]
    slot = (NodeDelay(5).to_bytes() + NodeDelay(6).to_bytes() + Recipient(bytes(64)).to_bytes()).ljust(82, b"\0")
    packet = single_hop_packet(pub, slot, bytes(100))
    packets = np.frombuffer(packet, dtype=np.uint8).reshape(1, -1).copy()
    result = batch.UnwrapBatch(1)
    batch.unwrap_batch(packets, 1, batch.keys_array([key]), result)
    assert result.status[0] == 0
    assert result.flags[0] == batch.FLAG_NODE_DELAY | batch.FLAG_RECIPIENT | batch.FLAG_DUPLICATE
    assert result.delay_ms[0] == 5


def test_rows_past_n_are_untouched_and_n_zero_is_fine(nodes):
    fwd, _ = forward_packet(nodes)
    packets = np.frombuffer(fwd * 2, dtype=np.uint8).reshape(2, -1).copy()
    result = batch.UnwrapBatch(2)
    keys = batch.keys_array([nodes[0][0]])
    assert batch.unwrap_batch(packets, 0, keys, result) == 0
    assert batch.unwrap_batch(packets, 1, keys, result) == 1
    assert packets[1].tobytes() == fwd


def test_short_rows_report_truncated(nodes):
    packets = np.zeros((2, 100), dtype=np.uint8)
    result = batch.UnwrapBatch(2)
    assert batch.unwrap_batch(packets, 2, batch.keys_array([nodes[0][0]]), result) == 0
    assert list(result.status[:2]) == [errors.ERR_TRUNCATED] * 2
    empty = np.zeros((1, 0), dtype=np.uint8)
    batch.unwrap_batch(empty, 1, batch.keys_array([nodes[0][0]]), result)
    assert result.status[0] == errors.ERR_TRUNCATED


def test_argument_checks(nodes):
    packets = np.zeros((4, g.PACKET_LENGTH), dtype=np.uint8)
    keys = batch.keys_array([nodes[0][0]])
    with pytest.raises(ValueError, match="batch count 5 outside 0..4"):
        batch.unwrap_batch(packets, 5, keys, batch.UnwrapBatch(8))
    with pytest.raises(ValueError, match="result.status holds 2 rows, batch needs 4"):
        batch.unwrap_batch(packets, 4, keys, batch.UnwrapBatch(2))
    with pytest.raises(ValueError, match=r"keys must be uint8\[1..3, 32\]"):
        batch.unwrap_batch(packets, 1, np.zeros((4, 32), dtype=np.uint8), batch.UnwrapBatch(4))
    with pytest.raises(ValueError, match=r"keys must be uint8\[1..3, 32\]"):
        batch.unwrap_batch(packets, 1, np.zeros((1, 31), dtype=np.uint8), batch.UnwrapBatch(4))
    with pytest.raises(ValueError, match="need 1..3 private keys"):
        batch.keys_array([bytes(32)] * 4)
    with pytest.raises(ValueError, match="need 1..3 private keys"):
        batch.keys_array([bytes(31)])
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        batch.UnwrapBatch(0)
    with pytest.raises(ValueError, match="packets must be C-contiguous"):
        batch.unwrap_batch(packets[:, ::2], 1, keys, batch.UnwrapBatch(4))
    with pytest.raises(ValueError, match="packets must be C-contiguous"):
        batch.unwrap_batch(np.asfortranarray(packets), 1, keys, batch.UnwrapBatch(4))
    with pytest.raises(ValueError, match="packets must be a 2-D uint8 array, got format 'h'"):
        batch.unwrap_batch(packets.astype(np.int16), 1, keys, batch.UnwrapBatch(4))
    with pytest.raises(ValueError, match="packets must be a 2-D uint8 array.*1 dimension"):
        batch.unwrap_batch(packets.reshape(-1), 1, keys, batch.UnwrapBatch(4))
    with pytest.raises(TypeError, match="packets must be a uint8"):
        batch.unwrap_batch([b"not an array"], 1, keys, batch.UnwrapBatch(4))
    read_only = packets.copy()
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="packets must be writable"):
        batch.unwrap_batch(read_only, 1, keys, batch.UnwrapBatch(4))
    with pytest.raises(ValueError, match="keys must be C-contiguous"):
        batch.unwrap_batch(packets, 1, np.zeros((2, 64), dtype=np.uint8)[:, ::2], batch.UnwrapBatch(4))
    with pytest.raises(ValueError, match=r"keys must be uint8\[1..3, 32\]"):
        batch.unwrap_batch(packets, 1, np.zeros((0, 32), dtype=np.uint8), batch.UnwrapBatch(4))
    with pytest.raises(ValueError, match="batch count -1 outside"):
        batch.unwrap_batch(packets, -1, keys, batch.UnwrapBatch(4))
    result = batch.UnwrapBatch(4)
    result.surb_id = np.zeros(4, dtype=np.uint8)
    with pytest.raises(ValueError, match=r"result.surb_id rows must be 16 bytes, got shape \(4,\)"):
        batch.unwrap_batch(packets, 1, keys, result)
    result = batch.UnwrapBatch(4)
    result.status = np.zeros(4, dtype=np.int64)
    with pytest.raises(ValueError):  # wrong dtype of a result array: Cython's buffer check
        batch.unwrap_batch(packets, 1, keys, result)
    result = batch.UnwrapBatch(4)
    result.tags = np.zeros((4, 31), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"result.tags rows must be 32 bytes, got shape \(4, 31\)"):
        batch.unwrap_batch(packets, 1, keys, result)


def both_batches_seen_part_way(fwd, keys, rows):
    """One attempt: two threads each unwrap `rows` packets in a single call while this
    thread polls both buffers. True if both were ever seen part-way done at once."""
    buffers = [np.frombuffer(fwd * rows, dtype=np.uint8).reshape(rows, -1).copy() for _ in range(2)]
    original_alpha = buffers[0][0, 2:34].copy()
    results = [batch.UnwrapBatch(rows) for _ in range(2)]
    start = threading.Barrier(3)
    done = [0, 0]

    def worker(i):
        start.wait()
        done[i] = batch.unwrap_batch(buffers[i], rows, keys, results[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    start.wait()
    both_part_way = False
    deadline = time.monotonic() + 60
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        progress = [int((b[:, 2:34] != original_alpha).any(axis=1).sum()) for b in buffers]
        if all(0 < p < rows for p in progress):
            both_part_way = True
        time.sleep(0.0005)
    for t in threads:
        t.join(60)
    assert done == [rows, rows]
    return both_part_way


def test_two_threads_unwrap_batches_at_the_same_time(nodes):
    """Each worker's rows change one by one inside a single unwrap_batch call. A poller
    that needs the GIL sees both buffers part-way done at once only if both calls run
    without holding the GIL. A loaded machine may deschedule a worker for a whole batch,
    so up to three attempts are made."""
    fwd, _ = forward_packet(nodes)
    keys = batch.keys_array([nodes[0][0]])
    assert any(both_batches_seen_part_way(fwd, keys, 600) for _ in range(3)), \
        "never saw both batches in progress at once: is the GIL held?"
