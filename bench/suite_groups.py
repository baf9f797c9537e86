"""The groups of `python -m bench`: which pyperf benchmarks each registers (hot path and baseline,
always in the same order, because pyperf's worker processes find their benchmark by its index),
and which other measurements it makes in the parent process only (rates at offered loads,
latency distributions, RSS, CPU per stage: the "extra" results, saved beside the pyperf file).

Every measurement is the code of the stand-alone script in bench/ (imported, never copied): the
adapters below only bind arguments and import that script when a worker first runs it.
"""
from __future__ import annotations

import asyncio
import atexit
import importlib
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

from katzenpost.sphinx.geometry import PACKET_LENGTH


@dataclass(frozen=True)
class Settings:
    quick: bool


@dataclass(frozen=True)
class Spec:
    """One pyperf benchmark: `time_func(loops, *args)` returns seconds for `loops` iterations."""
    name: str
    time_func: Callable
    args: tuple = ()
    inner_loops: int | None = None
    description: str = ""


@dataclass(frozen=True)
class Group:
    name: str
    summary: str
    specs: Callable[[Settings], list[Spec]] = lambda settings: []
    extra: Callable[[Settings], dict] | None = None
    extra_summary: str = ""
    tags: tuple = field(default=())


def script(name):
    return importlib.import_module(name)


def bound(module, attr):
    """A time function that imports the bench script `module` when a worker first runs it."""
    def time_func(loops, *args):
        return getattr(script(module), attr)(loops, *args)
    time_func.__name__ = f"{module}.{attr}"
    return time_func


def per_item(module, attr, items):
    """For a script function that returns seconds per item of a batch of `items`: the seconds of
    the whole loop, so that pyperf (told inner_loops=items) calibrates its loops on the real time
    and still reports per item."""
    def time_func(loops, *args):
        return getattr(script(module), attr)(loops, *args) * items
    time_func.__name__ = f"{module}.{attr}"
    return time_func


# ------------------------------------------------------------------ machine reference

def empty_call(loops):
    def nothing():
        pass
    start = time.perf_counter()
    for _ in range(loops):
        nothing()
    return time.perf_counter() - start


REFERENCE = Spec("python_empty_call", empty_call,
                 description="machine reference: one empty Python function call (tells a slower "
                             "machine or interpreter from a slower code path)")


# ------------------------------------------------------------------ aez

def aez_compiled(loops, backend):
    return script("bench_aez").timed_compiled(backend)(loops)


def aez_specs(settings):
    from katzenpost._core import aez
    specs = []
    if aez.cpu_has_aesni():
        specs.append(Spec("aez_aesni_2064", aez_compiled, ("aesni",),
                          description="AEZ v5 encrypt of the 2,064-byte Sphinx SPRP input, AES-NI"))
    specs.append(Spec("aez_portable_2064", aez_compiled, ("portable",),
                      description="the same, portable (no AES-NI) compiled backend"))
    specs.append(Spec("aez_reference_2064", bound("bench_aez", "timed_reference"),
                      description="baseline: the pure-Python reference AEZ"))
    return specs


# ------------------------------------------------------------------ sphinx

BATCH = 64      # bench_sphinx.BATCH (not imported here: the listing must not build packets)


def sphinx_specs(settings):
    from katzenpost._core import sphinx as core
    specs = []
    for backend in core.available_x25519_backends():
        specs += [
            Spec(f"two_x25519_{backend}", bound("bench_sphinx", "two_x25519"), (backend,),
                 description=f"the X25519 floor of one unwrap: two scalar multiplications ({backend})"),
            Spec(f"x25519_per_op_batch_{BATCH}_{backend}", per_item("bench_sphinx", "x25519_batch", BATCH),
                 (backend,), BATCH, description=f"X25519 per operation in batches of {BATCH} ({backend})"),
            Spec(f"unwrap_2524_core_{backend}", bound("bench_sphinx", "unwrap_core"), (backend,),
                 description=f"single-packet unwrap of a 2,524-byte packet ({backend})"),
            Spec(f"unwrap_batch_{BATCH}_per_packet_{backend}",
                 per_item("bench_sphinx", "unwrap_batch_backend", BATCH), (backend,), BATCH, description=f"batch unwrap, per packet, batches of {BATCH} ({backend})"),
        ]
    specs.append(Spec("unwrap_2524_public_api", bound("bench_sphinx", "unwrap_api"),
                      description="katzenpost.sphinx.unwrap (default backend)"))
    if not settings.quick:
        specs += [Spec(f"unwrap_batch_per_packet_{n}_thread{'s' if n > 1 else ''}",
                       per_item("bench_sphinx", "unwrap_batch_threads", n * BATCH), (n,), n * BATCH,
                       description=f"batch unwrap, wall time per packet, {n} thread(s) each unwrapping "
                                   f"batches of {BATCH}") for n in (1, 2)]
    specs.append(Spec("unwrap_2524_pure_python_reference", bound("bench_sphinx", "unwrap_reference"),
                      description="baseline: the pure-Python reference unwrap"))
    return specs


# ------------------------------------------------------------------ replay

REPLAY_BATCH = 256   # bench_replay.BATCH


def replay_specs(settings):
    # --quick: a 1 M-tag filter (3.4 MiB, built in 0.1 s) instead of 12 M (41 MiB, ~2 s a
    # process); the names say which, so `compare` never matches one against the other.
    size, expected = ("1M", 1_000_000) if settings.quick else ("12M", 12_000_000)
    set_size, prefill = ("200k", 200_000) if settings.quick else ("2M", 2_000_000)
    filt = bound("bench_replay", "bench_mmap_filter")
    specs = [Spec(f"replay_mmap_{size}_1e-6", filt, (expected, 1e-6), REPLAY_BATCH,
                  description=f"replay filter check_and_add per fresh tag, {size} tags at 1e-6, half full")]
    if not settings.quick:
        specs += [Spec(f"replay_mmap_{size}_1e-3", filt, (expected, 1e-3), REPLAY_BATCH,
                       description=f"the same at 1e-3"),
                  Spec("replay_two_threads", bound("bench_replay", "bench_two_threads"), (), REPLAY_BATCH,
                       description="two threads sharing one 12 M filter, wall time per tag"),
                  Spec("replay_kernel_l1_hash_bound", bound("bench_replay", "bench_small_kernel"), (),
                       REPLAY_BATCH, description="the same kernel on an L1-resident filter (hash-bound)"),
                  Spec("replay_blake2b_keyed_hashlib", bound("bench_replay", "bench_blake2b_keyed"), (),
                       REPLAY_BATCH, description="keyed BLAKE2b of each tag in hashlib")]
    specs.append(Spec(f"replay_set_baseline_{set_size}", bound("bench_replay", "bench_set"), (prefill,),
                      REPLAY_BATCH, description=f"baseline: a Python set of {set_size} bytes tags, test-and-set"))
    return specs


# ------------------------------------------------------------------ wheel

WHEEL_BATCH = 256    # bench_wheel.BATCH


# "_us": the node's unit, microsecond deadlines (two or three cascades a packet instead of one).
# Its row-scatter floor would be the millisecond scenario's (the floor has no deadlines): not run twice.
WHEEL_MICROSECOND_SCENARIOS = ("40k_full_packets_us",)


def wheel_specs(settings):
    scenarios = (["40k_full_packets", "40k_full_packets_us"] if settings.quick
                 else ["40k_full_packets", "40k_full_packets_us", "40k_32B", "1M_64B"])
    modes = ["copy"] if settings.quick else ["copy", "slots", "slots+view"]
    specs = []
    for scenario in scenarios:
        specs += [Spec(f"wheel_{scenario}_{mode}", bound("bench_wheel", "run_wheel"), (scenario, mode),
                       WHEEL_BATCH, description=f"timer wheel insert + expiry per packet ({scenario}, {mode})")
                  for mode in modes]
        specs.append(Spec(f"heapq_{scenario}", bound("bench_wheel", "run_heapq"), (scenario,), WHEEL_BATCH,
                          description=f"baseline: heapq doing the same ({scenario})"))
        if scenario not in WHEEL_MICROSECOND_SCENARIOS:
            specs.append(Spec(f"floor_{scenario}", bound("bench_wheel", "run_floor"), (scenario,), WHEEL_BATCH,
                              description=f"floor: scattering the same rows into an arena ({scenario})"))
    return specs


def wheel_rss_growth(points, packet_len):
    """RSS growth of a fresh process against packets held in one TimerWheel (runs in a child)."""
    import numpy as np

    from katzenpost._core.wheel import TimerWheel

    def rss():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

    rng = np.random.default_rng(1)
    packets = rng.integers(0, 256, (WHEEL_BATCH, packet_len), dtype=np.uint8)
    hops = np.zeros(WHEEL_BATCH, np.int32)
    deadlines = [rng.integers(10**6, 10**6 + 8000, WHEEL_BATCH).astype(np.int64) for _ in range(16)]
    base = rss()
    wheel = TimerWheel(0, packet_len, 1)
    rows, held = [], 0
    for target in points:
        while held < target:
            wheel.insert_batch(deadlines[(held // WHEEL_BATCH) % 16], hops, packets)
            held += WHEEL_BATCH
        rows.append({"packets": len(wheel), "rss_growth_bytes": rss() - base, "wheel_nbytes": wheel.nbytes})
    return rows


def wheel_extra(settings):
    points = [0, 8192, 16384, 32768] if settings.quick else [0, 16384, 32768, 65536, 131072]
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        rows = pool.apply(wheel_rss_growth, (points, PACKET_LENGTH))
    first, last = rows[0], rows[-1]
    per_packet = (last["rss_growth_bytes"] - first["rss_growth_bytes"]) / max(last["packets"] - first["packets"], 1)
    print(f"# wheel memory: {per_packet:.0f} B of RSS per queued {PACKET_LENGTH}-byte packet "
          f"({last['packets']:,} packets: +{last['rss_growth_bytes'] / 2**20:.1f} MiB)", flush=True)
    return {"wheel_memory": {"packet_length": PACKET_LENGTH, "rows": rows,
                             "rss_bytes_per_queued_packet": round(per_packet, 1)}}


# ------------------------------------------------------------------ wire

def wire_frames(loops, direction, compiled):
    wire = script("bench_wire")
    func = wire.send_packet_send if direction == "send" else wire.send_packet_receive
    return func(loops, wire.CompiledCipher if compiled else wire.ReferenceCipher)


def wire_handshake(loops, role, kem):
    wire = script("bench_wire")
    factory = wire.CryptographyKyber1024 if kem == "cryptography" else wire.KyberPyKyber1024
    return wire.timed_handshakes(loops, factory, role)


def wire_specs(settings):
    specs = []
    for direction in ("send", "receive"):
        specs += [Spec(f"wire_sendpacket_{direction}", wire_frames, (direction, True),
                       description=f"SendPacket 2,524 B frame, {direction} (_core.linkframe)"),
                  Spec(f"wire_sendpacket_{direction}_twin", wire_frames, (direction, False),
                       description=f"baseline: the pure-Python twin over cryptography, {direction}")]
    if not settings.quick:
        for role in ("initiator", "responder"):
            specs += [Spec(f"wire_handshake_{role}", wire_handshake, (role, "cryptography"),
                           description=f"Noise XXhfs handshake, {role}'s calls (cryptography ML-KEM)"),
                      Spec(f"wire_handshake_{role}_kyberpy", wire_handshake, (role, "kyber-py"),
                           description=f"baseline: the same with kyber-py's pure-Python Kyber")]
        specs.append(Spec("wire_loopback_session", bound("bench_wire", "session_loopback"),
                          description="SendPacket through a loopback session, send + receive"))
    return specs


# ------------------------------------------------------------------ pipeline

def classify(loops, impl):
    module = "katzenpost._core.classify" if impl == "core" else "katzenpost.reference.classify"
    return script("bench_pipeline_classify").classify_loop(loops, importlib.import_module(module))


def pipeline_specs(settings):
    return [Spec("classify_batch64_core", classify, ("core",), 64,
                 description="classification of a 64-packet worker batch, per packet (_core.classify)"),
            Spec("classify_batch64_reference", classify, ("reference",), 64,
                 description="baseline: its pure-Python twin")]


def pipeline_extra(settings):
    bench_pipeline = script("bench_pipeline")
    if settings.quick:
        argv = ["--rates", "2000,8000", "--seconds", "1", "--cases", "relay,b", "--b-workers", "1",
                "--warmup-seconds", "0.5"]
    else:
        argv = ["--rates", "2000,5000,10000,20000", "--seconds", "2", "--cases", "relay,a,b",
                "--b-workers", "1,2"]
    result = asyncio.run(bench_pipeline.main_async(bench_pipeline.parse_args(argv)))
    return {"pipeline": result}


# ------------------------------------------------------------------ node

def node_extra(settings):
    bench_node = script("bench_node")
    return {"node": bench_node.run(bench_node.parse_args(["--quick"] if settings.quick else []))}


# ------------------------------------------------------------------ provider

SPOOL_BATCH = 64
_spool = {}


def spool_time(loops, name):
    """Seconds for `loops` calls of one spool operation on a SQLite spool kept per process."""
    ops = _spool_operations()
    operation, _ = ops[name]
    if name == "get_round_trips":          # a Get that finds nothing would be flattered
        _spool_refill(loops)
    start = time.perf_counter()
    for _ in range(loops):
        operation()
    return time.perf_counter() - start


def _spool_operations():
    if "ops" not in _spool:
        from katzenpost.provider.spool.sqlite import SQLiteSpool
        directory = tempfile.mkdtemp(dir=os.environ.get("BENCH_DIR"))
        atexit.register(shutil.rmtree, directory, True)
        spool = SQLiteSpool(os.path.join(directory, "spool.db"))
        atexit.register(spool.close)
        _spool.update(spool=spool, ops=script("bench_provider_spool").spool_operations(spool, SPOOL_BATCH),
                      queued=0)
    return _spool["ops"]


def _spool_refill(loops):
    """Keep at least `loops` messages queued for the user the Gets read (stores are not timed)."""
    spool_script = script("bench_provider_spool")
    user = spool_script.USERS[0]
    records = [spool_script.SpoolRecord(user, None, spool_script.BODY)] * 1000
    while _spool["queued"] < loops + 1:
        _spool["spool"].store_batch(records)
        _spool["queued"] += len(records)
    _spool["queued"] -= loops // 2 + 1        # every other Get advances (deletes the head)


def provider_specs(settings):
    return [Spec("provider_spool_store_single_sqlite", spool_time, ("store_single",),
                 description="baseline: one durable spool store per commit (SQLite), per message"),
            Spec("provider_spool_store_batched_sqlite", spool_time, ("store_batched",), SPOOL_BATCH,
                 description=f"spool stores in batches of {SPOOL_BATCH} per commit, per message"),
            Spec("provider_spool_get_sqlite", spool_time, ("get_round_trips",),
                 description="spool Get (alternately peek and advance: a committed delete)")]


def provider_extra(settings):
    spool_script = script("bench_provider_spool")
    seconds = 0.5 if settings.quick else 2.0
    extra = {"delivery_sqlite": spool_script.delivery_case(seconds, SPOOL_BATCH)}
    if not settings.quick:          # real wire sessions: client ingress and RetrieveMessage
        import logging
        logging.basicConfig(level=logging.CRITICAL)
        extra["node_sqlite"] = asyncio.run(script("bench_provider").node_case({}, seconds, with_ingress=True))
    print(f"# provider: {extra}", flush=True)
    return {"provider": extra}


# ------------------------------------------------------------------ the groups, in run order

GROUPS = [
    Group("aez", "AEZ v5 on the Sphinx payload: AES-NI and portable against the pure-Python reference",
          aez_specs),
    Group("sphinx", "Sphinx unwrap per X25519 backend (lanes/libsodium/OpenSSL), single and batch, "
                    "against the two-X25519 floor and the pure-Python reference", sphinx_specs),
    Group("replay", "replay filter check_and_add on fresh tags against a Python set", replay_specs),
    Group("wheel", "timer wheel insert + expiry against heapq and a row-scatter floor", wheel_specs,
          wheel_extra, "RSS growth against packets held in a wheel"),
    Group("wire", "link frames (SendPacket seal/open) against the pure-Python twin; full: handshakes "
                  "against kyber-py, a loopback session", wire_specs),
    Group("pipeline", "the workers' classification against its twin; the packet pipeline on loopback "
                      "(bench_pipeline.py) at offered loads, against a plain relay", pipeline_specs,
          pipeline_extra, "forwarded rate, loss, latency and CPU per thread at offered loads"),
    Group("node", "one real mix over real wire sessions (bench_node.py) at offered loads, against one "
                  "core's raw unwrap rate", extra=node_extra,
          extra_summary="throughput, loss, added-latency quantiles, CPU per stage, RSS over the run"),
    Group("provider", "provider spool writes (single vs batched commits) and retrievals; the delivery "
                      "path; full: client ingress and RetrieveMessage over real wire sessions",
          provider_specs, provider_extra, "delivery rate, retrieval round trips"),
]
GROUP_NAMES = [g.name for g in GROUPS]
