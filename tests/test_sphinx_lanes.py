"""The lane paths (docs/sphinx-backends.md): batch unwrap in groups of eight, X25519 in
lanes, batch packet and SURB creation. On every X25519 backend each batch must give, packet by
packet, exactly what the single-packet path gives: status, key index, flags, fields, replay
tag and the rewritten packet. The lane backend only runs where the CPU has AVX-512 IFMA and
libcrypto_mb is installed (a visible skip elsewhere); the fallback is tested in subprocesses
that force or lose the library."""
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import katzenpost.sphinx as sphinx
from katzenpost._core import sphinx as core
from katzenpost.reference import sphinx as ref
from katzenpost.sphinx import NextNodeHop, NodeDelay, PathHop, Recipient, SURBReply, batch, errors
from katzenpost.sphinx import geometry as g

from sphinx_support import counter_rng, keypair, packet_for_secret, single_hop_packet, x25519_backend  # noqa: F401
from test_sphinx_api import LOW_ORDER, RFC7748

ROOT = Path(__file__).resolve().parent.parent
BODY = g.FORWARD_PAYLOAD_LENGTH  # every row of a batch has the same length: 2,524 bytes
RESULT_FIELDS = ("status", "key_index", "flags", "delay_ms", "tags", "next_hop", "recipient", "surb_id")


def _slot(*cmds):
    return b"".join(c.to_bytes() for c in cmds).ljust(g.PER_HOP_ROUTING_INFO_LENGTH, b"\0")


@pytest.fixture(scope="module")
def pool():
    """Three node keys and ~30 packets of every kind a batch can meet (same length)."""
    nodes = [keypair() for _ in range(3)]
    pubs = [pub for _, pub in nodes]
    pkts = []
    for pub in pubs + [keypair()[1]]:  # the last: a key the node does not hold
        path = [PathHop(os.urandom(32), pub, [NodeDelay(random.randrange(1 << 32))]),
                PathHop(os.urandom(32), pubs[1], [Recipient(os.urandom(64))])]
        pkts.append(sphinx.new_packet(path, os.urandom(BODY)))
        pkts.append(sphinx.new_packet([PathHop(os.urandom(32), pub, [Recipient(os.urandom(64))])],
                                      os.urandom(BODY)))
        surb, _ = sphinx.new_surb([PathHop(os.urandom(32), pub, [Recipient(os.urandom(64)),
                                                                 SURBReply(os.urandom(16))])])
        pkts.append(sphinx.new_packet_from_surb(surb, os.urandom(BODY))[0])
    fwd = pkts[0]
    pkts.append(fwd[:444] + bytes([fwd[444] ^ 1]) + fwd[445:])  # MAC mismatch
    pkts.append(b"\x00\x01" + fwd[2:])  # unknown version
    pkts.append(fwd[:500] + bytes([fwd[500] ^ 0x40]) + fwd[501:])  # payload: forwarded as is
    terminal = bytearray(pkts[1])
    terminal[470] ^= 1
    pkts.append(bytes(terminal))  # payload tag fails: ERR_PAYLOAD_AUTH
    pkts.append(single_hop_packet(pubs[0], b"\x7f" + bytes(81), os.urandom(BODY)))  # invalid command
    nn = NextNodeHop(os.urandom(32), os.urandom(16))
    pkts.append(single_hop_packet(pubs[2], _slot(nn, nn)[:82], os.urandom(BODY)))  # truncated command
    sr = SURBReply(os.urandom(16))
    pkts.append(single_hop_packet(pubs[1], _slot(sr, sr, Recipient(os.urandom(64)))[:82], os.urandom(BODY)))
    pkts.append(single_hop_packet(pubs[0], _slot(NodeDelay(1), NodeDelay(2), Recipient(bytes(64))),
                                  os.urandom(BODY)))  # duplicate flag, first delay wins
    for point in (LOW_ORDER[0], LOW_ORDER[2], LOW_ORDER[4]):  # all-zero secret, any key
        pkts.append(packet_for_secret(point, bytes(32), _slot(Recipient(os.urandom(64))), os.urandom(BODY)))
        pkts.append(packet_for_secret(point, bytes(32), _slot(NextNodeHop(os.urandom(32), os.urandom(16))),
                                      os.urandom(BODY)))
    assert {len(p) for p in pkts} == {g.PACKET_LENGTH}
    return [k for k, _ in nodes], pkts


def _batch(rows, keys):
    packets = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), -1).copy()
    result = batch.UnwrapBatch(max(1, len(rows)))
    ok = batch.unwrap_batch(packets, len(rows), batch.keys_array(keys), result)
    return ok, packets, result


def _one_by_one(rows, keys):
    """The single-packet path: each packet alone (one lane: the scalar X25519)."""
    outcomes = []
    for row in rows:
        _, packets, result = _batch([row], keys)
        outcomes.append((packets[0].tobytes(), {f: getattr(result, f)[0].tobytes() for f in RESULT_FIELDS}))
    return outcomes


def test_every_batch_size_matches_the_single_packet_path_lane_by_lane(pool, x25519_backend):
    node_keys, pkts = pool
    rnd = random.Random(17)
    singles = {}
    for size in range(1, 41):
        keys = node_keys[: 1 + size % 3]
        rows = [rnd.choice(pkts) for _ in range(size)]
        if size > 1:
            rows[rnd.randrange(size)] = rows[0]  # a replay inside the batch
        ok, packets, result = _batch(rows, keys)
        key_id = len(keys)
        for i, row in enumerate(rows):
            if (row, key_id) not in singles:
                singles[(row, key_id)] = _one_by_one([row], keys)[0]
            packet, fields = singles[(row, key_id)]
            assert packets[i].tobytes() == packet, (size, i)
            for f in RESULT_FIELDS:
                assert getattr(result, f)[i].tobytes() == fields[f], (size, i, f)
            status, key_index, tag, _ = core.unwrap(b"".join(keys), bytearray(row))
            assert (result.status[i], result.key_index[i]) == (status, key_index)
            assert tag is None or bytes(result.tags[i]) == tag
        assert ok == int((result.status[:size] == 0).sum())


def test_pool_covers_every_outcome(pool):
    node_keys, pkts = pool
    _, _, result = _batch(pkts, node_keys[:2])
    codes = set(result.status[: len(pkts)].tolist())
    assert codes >= {errors.OK, errors.ERR_MAC_MISMATCH, errors.ERR_UNKNOWN_VERSION,
                     errors.ERR_PAYLOAD_AUTH, errors.ERR_INVALID_COMMAND,
                     errors.ERR_DUPLICATE_SURB_REPLY}
    assert set(result.key_index[: len(pkts)].tolist()) == {-1, 0, 1}


def test_trial_keys_retry_only_the_packets_that_failed(pool, x25519_backend):
    """Packets for key 2 in one group with packets for key 0: the key-2 lanes are retried
    alone in the later passes and unwrap like the single path; key order decides ties."""
    node_keys, pkts = pool
    rows = [pkts[0], pkts[6], pkts[3], pkts[6], pkts[0], pkts[8], pkts[7], pkts[9]]
    _, packets, result = _batch(rows, node_keys)
    assert list(result.key_index[:8]) == [0, 2, 1, 2, 0, 2, 2, -1]
    assert list(result.status[:8]) == [0, 0, 0, 0, 0, 0, 0, errors.ERR_MAC_MISMATCH]
    assert packets[0].tobytes() == packets[4].tobytes() == sphinx.unwrap(node_keys[0], pkts[0]).packet


def test_low_order_group_elements_give_the_all_zero_secret_in_lanes(pool, x25519_backend):
    node_keys, pkts = pool
    low = [p for p in pkts if p[2:34] in (LOW_ORDER[0], LOW_ORDER[2], LOW_ORDER[4])]
    _, packets, result = _batch(low * 2, node_keys[:1])
    assert list(result.status[: len(low) * 2]) == [0] * (len(low) * 2)
    for i, row in enumerate(low * 2):
        assert bytes(result.tags[i]) == ref.sha512_256(row[2:34])
        if result.flags[i] & batch.FLAG_NEXT_HOP:
            assert packets[i, 2:34].tobytes() == bytes(32)  # blinding a low-order point: zeros


def test_x25519_many_matches_one_at_a_time(x25519_backend):
    vectors = [(bytes.fromhex(k), bytes.fromhex(u), bytes.fromhex(out)) for k, u, out in RFC7748]
    for n in list(range(0, 18)) + [40]:
        scalars = [os.urandom(32) for _ in range(n)]
        points = [os.urandom(32) for _ in range(n)]
        for i in range(n):  # low-order points (also with the ignored top bit) and the RFC vectors
            if i % 5 == 1:
                points[i] = LOW_ORDER[i % len(LOW_ORDER)]
            elif i % 5 == 2:
                points[i] = LOW_ORDER[i % len(LOW_ORDER)][:31] + bytes([LOW_ORDER[i % len(LOW_ORDER)][31] | 0x80])
            elif i % 5 == 3:
                scalars[i], points[i], _ = vectors[i % len(vectors)]
        out = core.x25519_many(b"".join(scalars), b"".join(points))
        assert [out[32 * i : 32 * i + 32] for i in range(n)] == [ref.x25519(s, p) for s, p in zip(scalars, points)]
    with pytest.raises(ValueError, match="equal multiples of 32"):
        core.x25519_many(bytes(64), bytes(32))
    with pytest.raises(ValueError, match="equal multiples of 32"):
        core.x25519_many(bytes(33), bytes(33))


def test_x25519_lanes_just_below_p_match_the_reference(x25519_backend):
    """libcrypto_mb 2026.2's eight-lane X25519 is wrong for u in about [p - 1500, p) (p - 1
    among them, a small-order point Go maps to the all-zero secret): those lanes must go to
    the scalar backend (docs/sphinx-backends.md)."""
    p = 2**255 - 19
    rnd = random.Random(3)
    offsets = list(range(1, 40)) + [rnd.randrange(40, 1 << 16) for _ in range(40)] + [(1 << 16) - 19]
    points = [(p - d).to_bytes(32, "little") for d in offsets]
    points += [(int.from_bytes(pt, "little") | 1 << 255).to_bytes(32, "little") for pt in points[:8]]
    scalars = [os.urandom(32) for _ in points]
    out = core.x25519_many(b"".join(scalars), b"".join(points))
    assert [out[32 * i : 32 * i + 32] for i in range(len(points))] == [ref.x25519(s, pt) for s, pt in zip(scalars, points)]


# ---------------------------------------------------------------- batch creation

def _paths(count, seed):
    rnd = random.Random(seed)
    nodes = [keypair(bytes([i + 1]) * 32) for i in range(5)]
    paths = []
    for _ in range(count):
        hops = rnd.randint(1, g.NR_HOPS)
        path = [PathHop(bytes([rnd.randrange(256)]) * 32, nodes[i][1], [NodeDelay(rnd.randrange(1000))])
                for i in range(hops - 1)]
        path.append(PathHop(bytes(32), nodes[hops - 1][1], [Recipient(bytes([hops]) * 64)]))
        paths.append(path)
    return [k for k, _ in nodes], paths


@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 21])
def test_new_packets_equals_new_packet_in_a_loop(count, x25519_backend):
    keys, paths = _paths(count, seed=count)
    payloads = [os.urandom(BODY) for _ in range(count)]
    batched = sphinx.new_packets(paths, payloads, rng=counter_rng(b"e"), filler=counter_rng(b"f"))
    rng, filler = counter_rng(b"e"), counter_rng(b"f")
    assert batched == [sphinx.new_packet(p, m, rng=rng, filler=filler) for p, m in zip(paths, payloads)]
    for path, payload, packet in zip(paths, payloads, batched):
        for hop in range(len(path)):  # the whole walk, on the reference
            result = ref.unwrap(keys[hop], packet)
            packet = result.packet
        assert result.payload == payload


@pytest.mark.parametrize("count", [1, 8, 13])
def test_new_surbs_equals_new_surb_in_a_loop(count, x25519_backend):
    _, paths = _paths(count, seed=100 + count)
    batched = sphinx.new_surbs(iter(paths), rng=counter_rng(b"s"), filler=counter_rng(b"t"))
    rng, filler = counter_rng(b"s"), counter_rng(b"t")
    assert batched == [sphinx.new_surb(p, rng=rng, filler=filler) for p in paths]


def test_batch_creation_refuses_bad_input():
    _, paths = _paths(3, seed=5)
    with pytest.raises(ValueError, match="3 paths but 2 payloads"):
        sphinx.new_packets(paths, [b"", b""])
    too_long = PathHop(bytes(32), paths[0][0].public_key, [Recipient(bytes(64))] * 2)
    with pytest.raises(sphinx.SphinxError):
        sphinx.new_packets([paths[0], [too_long]], [b"", b""])
    with pytest.raises(sphinx.SphinxError):
        sphinx.new_surbs([paths[1], []])
    with pytest.raises(ValueError, match="a creation request is"):
        core.create_headers([(bytes(32),)])
    with pytest.raises(ValueError, match="command block too long"):
        core.create_headers([(bytes(32), bytes(32), bytes(32), bytes(82), [0], bytes(328)),
                             (bytes(32), bytes(64), bytes(64), bytes(164), [40, 0], bytes(246))])
    assert core.create_headers([]) == []


# ---------------------------------------------------------------- backend selection

def _python(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k != core.BACKEND_ENV}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=120)


SHOW = ("import katzenpost.sphinx as s; from katzenpost._core import sphinx as c; "
        "print(s.X25519_BACKEND, c.available_x25519_backends(), s.IFMA_STATUS, sep='|')")
ROUND_TRIP = ("import os, numpy as np, katzenpost.sphinx as s; from katzenpost.sphinx import batch, PathHop, Recipient; "
              "k = os.urandom(32); path = [PathHop(bytes(32), s.public_key(k), [Recipient(bytes(64))])]; "
              "rows = s.new_packets([path] * 9, [b'x' * 100] * 9); "
              "p = np.frombuffer(b''.join(rows), np.uint8).reshape(9, -1).copy(); r = batch.UnwrapBatch(9); "
              "assert batch.unwrap_batch(p, 9, batch.keys_array([k]), r) == 9; print('round trip ok')")


@pytest.mark.parametrize("forced", ["libsodium", "openssl"])
def test_forced_scalar_backend_does_not_load_the_library(forced):
    if forced not in core.available_x25519_backends():
        pytest.skip(f"{forced} not available here")
    out = _python(SHOW + "; " + ROUND_TRIP, **{core.BACKEND_ENV: forced})
    assert out.returncode == 0, out.stderr
    backend, available, status = out.stdout.splitlines()[0].split("|")
    assert backend == forced and "ifma" not in available
    assert status == f"not loaded ({core.BACKEND_ENV}={forced})"
    assert "round trip ok" in out.stdout


def test_unknown_forced_backend_fails_the_import():
    out = _python(SHOW, **{core.BACKEND_ENV: "avx9000"})
    assert out.returncode != 0 and "is not one of" in out.stderr


def test_without_the_library_the_best_scalar_backend_is_used():
    """No ipp-crypto in the package metadata and no libcrypto_mb on the search path (the
    state of a machine without the extra): the lane backend says why and the rest works."""
    hide = ("import importlib.metadata as m; real = m.distribution\n"
            "def fake(name):\n"
            "    if name in ('ipp-crypto', 'intel-cmplr-lib-rt'): raise m.PackageNotFoundError(name)\n"
            "    return real(name)\n"
            "m.distribution = fake\n")
    out = _python(hide + SHOW + "\n" + ROUND_TRIP)
    assert out.returncode == 0, out.stderr
    backend, available, status = out.stdout.splitlines()[0].split("|")
    assert backend in ("libsodium", "openssl") and "ifma" not in available
    assert status in ("the CPU (or the OS) has no AVX-512 IFMA",
                      "libcrypto_mb or its Intel runtime libraries do not load (pip install 'katzenpost[ifma]')")
    out = _python(hide + "import katzenpost._core.sphinx", **{core.BACKEND_ENV: "ifma"})
    assert out.returncode != 0 and "KATZENPOST_X25519_BACKEND=ifma but" in out.stderr


def test_loader_refuses_what_is_not_a_working_libcrypto_mb(tmp_path):
    if not core.cpu_has_ifma():
        pytest.skip("no AVX-512 IFMA: the loader stops at the CPU check")
    assert core.probe_crypto_mb(str(tmp_path / "libkatzenpost-missing.so")).startswith("libcrypto_mb or")
    assert core.probe_crypto_mb("libc.so.6") == "the libcrypto_mb found has no mbx_x25519_mb8"
    wrong = tmp_path / "wrong.c"  # right symbol, wrong answers: the self-test must refuse it
    wrong.write_text("#include <stdint.h>\n#include <string.h>\n"
                     "uint32_t mbx_x25519_mb8(uint8_t *o[8], const uint8_t *k[8], const uint8_t *p[8])\n"
                     "{ for (int i = 0; i < 8; i++) if (o[i]) memcpy(o[i], p[i], 32); return 0; }\n")
    lib = tmp_path / "libwrong.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(wrong)], check=True, timeout=60)
    assert core.probe_crypto_mb(str(lib)) == "libcrypto_mb failed the X25519 known-answer self-test"
    library, runtime = core.crypto_mb_paths()
    if "ifma" in core.available_x25519_backends():
        assert core.probe_crypto_mb(library, runtime) == ""


def test_lane_backend_is_preferred_when_it_loaded():
    if "ifma" in core.available_x25519_backends():
        assert sphinx.IFMA_STATUS == "loaded"
        assert core.available_x25519_backends()[0] == "ifma"
        if not os.environ.get(core.BACKEND_ENV):
            assert sphinx.X25519_BACKEND == "ifma"
    else:
        assert sphinx.IFMA_STATUS != "loaded"
        pytest.skip(f"lane backend not available: {sphinx.IFMA_STATUS}")
