"""Packet-pipeline load test on loopback: generator process -> the pipeline -> sink process.

This is not a whole node: packets travel with a plain 4-byte length prefix over 127.0.0.1 TCP,
without the wire protocol (Noise handshake, encrypted frames) or the PKI; `bench_node.py` runs a
real `katzenpost` node. Cases, each a sweep of offered rates (2,524-byte packets): `relay` (the baseline measured in the same run: a plain asyncio relay with the
same framing, no pipeline), `a` (zero-cost stand-in unwrap), `b` (the real Sphinx batch unwrap
on genuine packets, for each of --b-workers), `costNN` (stand-in at NN us per packet); suffix
`-thread` runs the timer wheel in a scheduler thread instead of on the I/O thread.

Per step: forwarded rate and loss, I/O-thread CPU per offered packet (net of the idle loop), CPU
per packet of each worker/scheduler thread, added latency p50/p99 beyond the scheduled delay, the
drops by reason, and the machine's CPU pressure (PSI) since the 2 cores are shared. The summary
gives, per case: highest no-loss rate, knee, marginal I/O CPU per packet, node CPU per forwarded
packet at the busiest step and the throughput that projects to on 2 free cores, ratios to the
targets (I/O <= 15 us, p99 <= 5 ms, (b) >= 0.85 x workers / unwrap cost) and to the relay.

    .venv/bin/python bench/bench_pipeline.py --rates 2000,8000,16000 --seconds 1.5 --cases relay,a,b \
        [--b-workers 1,2] [--pool-cache /tmp/pool.npz] [--json out.json]
"""
import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from pipeline_framing import FramedIngressProtocol, FramedSender, RelayIngressProtocol  # noqa: E402

from katzenpost._core import unwrap_standin  # noqa: E402
from katzenpost.server.counters import Event  # noqa: E402
from katzenpost.server.pipeline import Pipeline, PipelineSettings  # noqa: E402
from katzenpost.server.workers import MixKeySet  # noqa: E402
from katzenpost.sphinx import geometry  # noqa: E402

L = geometry.PACKET_LENGTH
NEXT_HOP = bytes(range(32))
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def wheel_type():
    from katzenpost._core.wheel import TimerWheel
    return TimerWheel


def replay_filters(tmpdir, count):
    from katzenpost.server.replay import ReplayFilter
    return tuple(ReplayFilter.create(str(Path(tmpdir) / f"replay-{os.urandom(6).hex()}"), 4_000_000, 1e-6)
                 for _ in range(count))


# ------------------------------------------------------------------ real Sphinx packets for case (b)

def make_sphinx_pool(count, delay_ms, path):
    """`count` distinct 2-hop forward packets for a node key, with the key the sink will read."""
    import katzenpost.sphinx as sphinx
    from katzenpost.sphinx import NodeDelay, PathHop, batch

    node_key = os.urandom(32)
    route = [PathHop(b"N" * 32, sphinx.public_key(node_key), [NodeDelay(delay_ms)]),
             PathHop(NEXT_HOP, sphinx.public_key(os.urandom(32)), [NodeDelay(0)])]
    packets = np.zeros((count, L), dtype=np.uint8)
    payload = bytes(geometry.FORWARD_PAYLOAD_LENGTH)
    for start in range(0, count, 256):      # batch creation: eight packets per X25519 lane pass
        n = min(256, count - start)
        made = sphinx.new_packets([route] * n, [payload] * n)
        packets[start:start + n] = np.frombuffer(b"".join(made), np.uint8).reshape(n, L)
    out = packets.copy()
    keys_arr = batch.keys_array([node_key])
    result = batch.UnwrapBatch(256)
    for start in range(0, count, 256):
        n = min(256, count - start)
        batch.unwrap_batch(out[start:start + n], n, keys_arr, result)
        if (result.status[:n] != 0).any():
            raise RuntimeError("bench: a generated Sphinx packet did not unwrap")
    sink_keys = np.array([int.from_bytes(out[i, 2:10].tobytes(), "big") for i in range(count)], np.uint64)
    np.savez(path, packets=packets, keys=sink_keys, node_key=np.frombuffer(node_key, np.uint8))
    return node_key


def unwrap_cost_us(pool_path, node_key, count=1024, batch_size=16):
    """CPU microseconds per packet of the real batch unwrap, one thread, measured in this run."""
    from katzenpost.sphinx import batch

    packets = np.load(pool_path)["packets"][:count].copy()
    keys, result = batch.keys_array([node_key]), batch.UnwrapBatch(batch_size)
    t0 = time.thread_time()
    for start in range(0, len(packets), batch_size):
        n = min(batch_size, len(packets) - start)
        batch.unwrap_batch(packets[start:start + n], n, keys, result)
    return (time.thread_time() - t0) * 1e6 / len(packets)


def load_or_make_pool(count, delay_ms, path):
    """Reuse a pool saved at `path` when it is big enough and has the same delay; else make one."""
    if Path(path).exists():
        pool = np.load(path)
        if len(pool["packets"]) >= count and int(pool.get("delay_ms", -1)) == delay_ms:
            return pool["node_key"].tobytes(), False
    node_key = make_sphinx_pool(count, delay_ms, path)
    data = dict(np.load(path))
    np.savez(path, delay_ms=delay_ms, **data)
    return node_key, True


# ------------------------------------------------------------------ one case

class Sink:
    def __init__(self, key_offset):
        self.proc = subprocess.Popen([sys.executable, str(HERE / "pipeline_sink.py"), "--key-offset",
                                      str(key_offset)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=ENV)
        self.port = int(self.proc.stdout.readline())

    async def dump(self, path):
        loop = asyncio.get_running_loop()
        self.proc.stdin.write(f"dump {path}\n")
        self.proc.stdin.flush()
        line = await loop.run_in_executor(None, self.proc.stdout.readline)
        return int(line.split()[1])

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        self.proc.wait(10)


async def run_case(name, args, tmpdir, *, engine=None, workers=0, pool=None, node_key=None, inline=False):
    loop = asyncio.get_running_loop()
    sink = Sink(2 if pool else 200)
    _, sender = await loop.create_connection(FramedSender, "127.0.0.1", sink.port)
    pipeline = None
    if engine is None:
        server = await loop.create_server(lambda: RelayIngressProtocol(sender), "127.0.0.1", 0)
    else:
        settings = PipelineSettings(NumSphinxWorkers=workers, SphinxBatchSize=args.batch,
                                    SphinxBatchWindowUs=args.window_us, OutgoingQueueSize=4096,
                                    SchedulerInline=inline, UnwrapDelay=args.unwrap_delay_ms)
        pipeline = Pipeline(settings, engine=engine, wheel_factory=wheel_type())
        await pipeline.start()
        key = np.frombuffer(node_key or bytes(32), np.uint8).reshape(1, 32)
        pipeline.set_mix_keys(MixKeySet(key, replay_filters(tmpdir, 1)))
        pipeline.set_destinations({NEXT_HOP: sender})
        server = await loop.create_server(lambda: FramedIngressProtocol.for_pipeline(pipeline), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cmd = [sys.executable, str(HERE / "pipeline_loadgen.py"), "--port", str(port),
           "--delay-ms", str(args.delay_ms), "--next-hop", NEXT_HOP.hex()]
    if pool:
        cmd += ["--packets", pool]
    gen = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE,
                                               stdout=asyncio.subprocess.PIPE, env=ENV)
    rows = []
    first_key = 0
    try:
        assert (await gen.stdout.readline()).strip() == b"ready"
        if args.warmup_seconds:
            # Unmeasured: touches the replay filter's and the wheel's pages, warms caches.
            saved, args.seconds = args.seconds, args.warmup_seconds
            await run_step(name + "_warmup", args, tmpdir, sink, gen, pipeline, args.rates[0], 0)
            args.seconds = saved
            first_key = int(args.rates[0] * args.warmup_seconds)
        idle_cpu_per_s = await measure_idle(pipeline, args)
        for rate in args.rates:
            row = await run_step(name, args, tmpdir, sink, gen, pipeline, rate, first_key)
            row["io_cpu_us_per_packet_net_of_idle"] = max(
                0.0, (row.pop("_cpu") - idle_cpu_per_s * row["_wall"]) * 1e6 / max(row["sent"], 1))
            row.pop("_wall")
            if "_threads_us" in row:
                node_us = row.pop("_threads_us") + row["io_cpu_us_per_packet_net_of_idle"]
                row["node_cpu_us_per_packet"] = node_us
                row["projected_pps_on_2_free_cores"] = 2e6 / node_us if node_us else None
            rows.append(row)
            first_key += int(rate * args.seconds)
            print(json.dumps(rows[-1]), flush=True)
    finally:
        gen.stdin.close()
        await gen.wait()
        server.close()
        await server.wait_closed()
        if pipeline:
            await pipeline.halt()
        sender.transport.close()
        sink.close()
    return rows


async def measure_idle(pipeline, args):
    """I/O-thread CPU per second of an idle node, including the driver's own settle polling."""
    cpu0, wall0 = time.thread_time(), time.monotonic()
    await asyncio.sleep(args.seconds)
    await settle(pipeline, args.delay_ms)
    return (time.thread_time() - cpu0) / (time.monotonic() - wall0)


async def run_step(name, args, tmpdir, sink, gen, pipeline, rate, first_key):
    gen_log = Path(tmpdir) / f"gen-{name}-{rate}.npz"
    sink_log = Path(tmpdir) / f"sink-{name}-{rate}.npz"
    before = pipeline.counters.snapshot() if pipeline else None
    threads0 = thread_cpu(pipeline)
    cpu0, wall0 = time.thread_time(), time.monotonic()
    gen.stdin.write(f"{rate} {args.seconds} {first_key} {gen_log}\n".encode())
    sent, gen_seconds = (await gen.stdout.readline()).split()
    sent = int(sent)
    await settle(pipeline, args.delay_ms)
    cpu, wall = time.thread_time() - cpu0, time.monotonic() - wall0
    threads1 = thread_cpu(pipeline)
    received = await sink.dump(sink_log)
    gen = np.load(gen_log)
    got = np.load(sink_log)
    order = np.argsort(gen["keys"])
    pos = np.searchsorted(gen["keys"][order], got["keys"])
    pos = np.clip(pos, 0, len(order) - 1)
    match = gen["keys"][order][pos] == got["keys"]
    latency_ms = (got["recv_ns"][match] - gen["send_ns"][order][pos[match]]) / 1e6 - (args.delay_ms if pipeline else 0)
    row = {"case": name, "offered_pps": rate, "sent": sent, "gen_seconds": float(gen_seconds),
           "cpu_pressure_some_avg10": cpu_pressure(),
           "received": received, "loss": 1 - received / sent if sent else 0.0,
           "forwarded_pps": received / float(gen_seconds),
           "io_cpu_us_per_packet": cpu * 1e6 / max(sent, 1), "_cpu": cpu, "_wall": wall,
           "added_latency_ms_p50": float(np.percentile(latency_ms, 50)) if len(latency_ms) else None,
           "added_latency_ms_p99": float(np.percentile(latency_ms, 99)) if len(latency_ms) else None}
    if pipeline:
        per_thread = {name: (threads1[name] - threads0.get(name, 0.0)) * 1e6 / max(sent, 1) for name in threads1}
        row["thread_cpu_us_per_packet"] = {k: round(v, 2) for k, v in per_thread.items()}
        # CPU the node spends per packet, all its threads (I/O thread net of idle is added by the caller).
        row["_threads_us"] = sum(per_thread.values())
        after = pipeline.counters.snapshot()
        row["drops"] = {k: v - before["drops"][k] for k, v in after["drops"].items() if v != before["drops"][k]}
    return row


def cpu_pressure():
    """Linux PSI `some avg10` for the CPU: % of time some runnable task waited (shared machine)."""
    try:
        with open("/proc/pressure/cpu") as f:
            return float(f.readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


def thread_cpu(pipeline):
    """CPU seconds used so far by each worker/scheduler thread of the pipeline."""
    if pipeline is None:
        return {}
    out = {}
    for thread in pipeline.threads():
        if thread is not None and thread.ident is not None and thread.is_alive():
            try:
                out[thread.name] = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
            except OSError:
                pass
    return out


async def settle(pipeline, delay_ms):
    """Wait until the node has nothing in flight (or a bounded time)."""
    await asyncio.sleep((delay_ms + 30) / 1000)
    if pipeline is None:
        await asyncio.sleep(0.2)
        return
    last, stable_since = None, time.monotonic()
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        c = pipeline.counters
        now = (c.event_total(Event.SENT), c.total_dropped(), c.event_total(Event.SCHEDULED))
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 0.1:
            return
        await asyncio.sleep(0.02)


def summarise(rows, target_io_us=15.0, target_p99_ms=5.0, loss_limit=0.001):
    by_case = {}
    unwrap_costs = []
    for row in rows:
        if row["case"] == "unwrap_baseline":
            unwrap_costs.append(row["unwrap_cpu_us_per_packet"])
            continue
        by_case.setdefault(row["case"], []).append(row)
    unwrap_us = float(np.mean(unwrap_costs)) if unwrap_costs else None
    summary = {}
    for case, steps in by_case.items():
        clean = [r for r in steps if r["loss"] <= loss_limit]
        lossy = [r for r in steps if r["loss"] > loss_limit]
        best = max(clean, key=lambda r: r["forwarded_pps"]) if clean else None
        summary[case] = {
            "no_loss_pps": best["forwarded_pps"] if best else 0.0,
            "knee_offered_pps": min(r["offered_pps"] for r in lossy) if lossy else None,
            "io_cpu_us_per_packet_below_knee": (
                float(np.median([r["io_cpu_us_per_packet_net_of_idle"] for r in clean])) if clean else None),
            "p99_ms_below_knee": (
                max(r["added_latency_ms_p99"] for r in clean if r["added_latency_ms_p99"] is not None)
                if clean else None),
        }
        s = summary[case]
        if best:
            s["io_cpu_us_per_packet_at_best"] = best["io_cpu_us_per_packet_net_of_idle"]
            s["p99_ms_at_best"] = best["added_latency_ms_p99"]
            if best.get("node_cpu_us_per_packet"):
                s["node_cpu_us_per_packet_at_best"] = best["node_cpu_us_per_packet"]
        if len(clean) >= 2:
            # Marginal I/O-thread CPU per packet: slope of CPU per step against packets per step
            # (the intercept is per-wakeup overhead, which depends on how traffic arrives).
            sent = np.array([r["sent"] for r in clean], float)
            cpu = np.array([r["io_cpu_us_per_packet_net_of_idle"] * r["sent"] for r in clean])
            s["io_cpu_marginal_us_per_packet"] = float(np.polyfit(sent, cpu, 1)[0])
        peak = max(steps, key=lambda r: r["forwarded_pps"])
        s["peak_forwarded_pps"] = peak["forwarded_pps"]
        node = None
        if peak.get("node_cpu_us_per_packet") and peak["received"]:
            # All node threads' CPU per packet actually forwarded, at the busiest step (where
            # batching amortises per-wakeup costs): what capacity on 2 free cores would be.
            node = peak["node_cpu_us_per_packet"] * peak["sent"] / peak["received"]
            s["node_cpu_us_per_forwarded_packet_at_peak"] = node
            s["projected_pps_on_2_free_cores"] = 2e6 / node
        if case.startswith("b_sphinx_w") and unwrap_us:
            workers = int(case.split("_w")[1].split("_")[0])
            s["unwrap_cpu_us_per_packet"] = unwrap_us
            s["target_pps"] = 0.85 * workers * 1e6 / unwrap_us
            s["no_loss_ratio_to_target"] = s["no_loss_pps"] / s["target_pps"]
            if node:
                s["projected_ratio_to_2_core_target"] = (s["projected_pps_on_2_free_cores"]
                                                         / (0.85 * 2e6 / unwrap_us))
        if s["io_cpu_us_per_packet_below_knee"] is not None:
            s["io_cpu_ratio_to_target"] = s["io_cpu_us_per_packet_below_knee"] / target_io_us
        if s["p99_ms_below_knee"] is not None:
            s["p99_ratio_to_target"] = s["p99_ms_below_knee"] / target_p99_ms
    if "relay" in summary:
        base = summary["relay"].get("io_cpu_us_per_packet_below_knee")
        for case, s in summary.items():
            if base and s.get("io_cpu_us_per_packet_below_knee"):
                s["io_cpu_ratio_to_relay"] = s["io_cpu_us_per_packet_below_knee"] / base
    return summary


async def main_async(args):
    """Every case of `args`: {"rows", "summary", "args"} (also used by `python -m bench`)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for case in args.cases:
            base, _, variant = case.partition("-")
            if variant not in ("", "inline", "thread"):
                raise SystemExit(f"bench: unknown variant {variant!r} (inline or thread)")
            inline = variant != "thread"                # the pipeline's default is inline
            suffix = "_inline" if inline else "_thread"
            if base == "relay":
                rows += await run_case("relay", args, tmpdir)
            elif base == "a":
                rows += await run_case(f"a_zero_cost_w{args.workers}{suffix}", args, tmpdir,
                                       engine=unwrap_standin.StandinUnwrapEngine(0), workers=args.workers,
                                       inline=inline)
            elif base.startswith("cost"):          # e.g. cost66: stand-in at 66 us per packet
                cost_us = int(base[4:])
                rows += await run_case(f"standin_{cost_us}us_w{args.workers}{suffix}", args, tmpdir,
                                       engine=unwrap_standin.StandinUnwrapEngine(cost_us * 1000),
                                       workers=args.workers, inline=inline)
            elif base == "b":
                from katzenpost.server.workers import SphinxUnwrapEngine
                pool = args.pool_cache or str(Path(tmpdir) / "pool.npz")
                total = int(sum(args.rates) * args.seconds + args.rates[0] * args.warmup_seconds) + 16
                t0 = time.monotonic()
                node_key, made = load_or_make_pool(total, args.delay_ms, pool)
                if made:
                    print(f"# made {total} Sphinx packets in {time.monotonic() - t0:.1f} s", flush=True)
                cost = unwrap_cost_us(pool, node_key)
                rows.append({"case": "unwrap_baseline", "unwrap_cpu_us_per_packet": cost})
                print(f"# real unwrap: {cost:.1f} us CPU per packet (one thread, this run)", flush=True)
                for workers in args.b_workers:          # each case has a fresh replay filter
                    rows += await run_case(f"b_sphinx_w{workers}{suffix}", args, tmpdir,
                                           engine=SphinxUnwrapEngine(), workers=workers, pool=pool,
                                           node_key=node_key, inline=inline)
            else:
                raise SystemExit(f"bench: unknown case {case!r}")
    summary = summarise(rows)
    print(json.dumps(summary, indent=1))
    return {"rows": rows, "summary": summary, "args": vars(args)}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[2000, 5000, 10000])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--cases", type=lambda s: s.split(","), default=["relay", "a", "a-thread"],
                    help="relay, a, b, costNN; -thread runs the wheel in a scheduler thread instead "
                         "of on the I/O thread (the default, also -inline)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--b-workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                    help="worker counts for case b (real unwrap)")
    ap.add_argument("--batch", type=int, default=PipelineSettings.SphinxBatchSize)
    ap.add_argument("--window-us", type=int, default=0)
    ap.add_argument("--delay-ms", type=int, default=5)
    ap.add_argument("--unwrap-delay-ms", type=int, default=10, help="Debug.UnwrapDelay for the node")
    ap.add_argument("--switch-interval-us", type=float, default=0,
                    help="sys.setswitchinterval for the node (0: Python's default 5 ms)")
    ap.add_argument("--pool-cache", help="case b: keep the generated Sphinx packets in this .npz")
    ap.add_argument("--warmup-seconds", type=float, default=1.0)
    ap.add_argument("--json")
    return ap.parse_args(argv)


def main():
    args = parse_args()
    if args.switch_interval_us:
        sys.setswitchinterval(args.switch_interval_us / 1e6)
    result = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
