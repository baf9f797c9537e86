"""Whole-node benchmark: ONE real `katzenpost -f` mix under rising offered load, over real wire
sessions (Noise handshake, per-frame AEAD and rekey), as deployed.

A real `katzenpost-authority` (one layer, one mix, two providers) lets the mix accept its peers.
A generator process poses as a provider of the previous layer and sends pre-built, distinct
Sphinx packets routed mix -> sink with NodeDelay 1 ms; a sink process poses as the next layer.
Per step of offered rate: forwarded rate, loss, added latency p50/p99 (sink receive time minus
generator send time, minus the 1 ms delay), the mix's CPU per forwarded packet (/proc/<pid>/stat)
and its RSS. Modes: `pinned` (mix on core 0 with `taskset -c 0` and one crypto worker, the tools
on core 1) and `shared` (no pinning, default workers). The baseline measured in the same run is
the raw batch-unwrap rate of one core (the node's own start-up self-test): the summary gives the
highest no-loss rate as a ratio to it.

    python3 bench/bench_node.py [--quick] [--modes pinned,shared] [--rates 2000,4000,...]
        [--seconds 4] [--loop uvloop|asyncio] [--json out.json] [-o pyperf.json]

Targets (reported, not asserted): >= 9,000 packets/s without loss pinned to one core; p99 added
latency <= 1.5 ms at 2,000 packets/s; RSS <= 150 MB under load.
"""
import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import node_tools  # noqa: E402
from node_support import Network, wait_for  # noqa: E402

from katzenpost import keys, sphinx  # noqa: E402
from katzenpost.server.node import measure_unwrap_capacity  # noqa: E402

DEFAULT_RATES = (2000, 4000, 6000, 9000, 12000, 18000)
QUICK_RATES = (2000, 6000)
NODE_DELAY_MS = 1
BENCH_PERIOD = 240               # s: a test-network epoch; a 10 s PKI tick gets the node going fast
QUICK_PERIOD = 60                # s: less waiting for a good point in the epoch; steps are short
BUILD_CHUNK = 500
DRAIN_SECONDS = 1.0
TARGET_RATE, TARGET_P99_MS, TARGET_RSS_MB = 9000, 1.5, 150
CLK_TCK = os.sysconf("SC_CLK_TCK")
LATENCY_QUANTILES = (0, 1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 99.5, 99.9, 100)
BULKY = ("latency_quantiles_ms",)   # row fields left out of the one-line progress print


def proc_cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK          # utime + stime


def proc_rss_mb(pid, field="VmRSS"):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def thread_cpu_seconds(pid):
    """CPU seconds by stage, summed over the mix's threads: the I/O thread (the main thread, whose
    thread id is the process id), libzmq's own threads (named ZMQbg/...), and the rest (the crypto
    workers; Python does not name its threads for the OS, so they are told apart by elimination)."""
    stages = {"io_thread": 0.0, "zmq_threads": 0.0, "workers_and_other_threads": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:                           # the thread ended meanwhile
            continue
        stage = ("io_thread" if task.name == str(pid) else
                 "zmq_threads" if comm.startswith("ZMQbg") else "workers_and_other_threads")
        stages[stage] += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return stages


def mix_env(loop, root=ROOT):
    """The mix's environment: its event loop, and this checkout's code first on its path, not
    the editable install's (which may be another checkout: measuring a worktree of an older
    commit for `python -m bench compare` must run that commit's mix)."""
    pythonpath = os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH"))))
    return dict(os.environ, KATZENPOST_EVENT_LOOP=loop, PYTHONPATH=pythonpath)


class Bench:
    def __init__(self, args, mode):
        self.args = args
        self.mode = mode
        self.pinned = mode == "pinned"
        self.root = Path(tempfile.mkdtemp(prefix=f"kp-bench-node-{mode}-"))
        workers = 1 if self.pinned else 0
        self.net = Network(self.root, period=args.period, layers=1, serve_providers=False, log_level="INFO",
                           workers=workers, management=True, mix_debug="\n".join(args.debug))
        self.mix = self.net.mixes[0]
        self.ctx = multiprocessing.get_context("spawn")
        self.gen = self.sink = None
        self.pool = None
        self.t0 = time.monotonic()
        self.rss_trace = []              # (seconds since the mode started, RSS MB) every 0.25 s

    # --- set-up ----------------------------------------------------------------------------

    def start(self):
        tools_core = 1 if self.pinned else None
        self.sink, sink_conn = self._spawn(node_tools.sink_main, tools_core, self.net.sink.port,
                                           self.net.sink.link.private, self.net.sink.identity.public,
                                           self.mix.identity.public)
        self.sink_conn = sink_conn
        assert sink_conn.recv() == ("listening",)
        self.net.start(mix_env=mix_env(self.args.loop), mix_prefix=("taskset", "-c", "0") if self.pinned else ())
        wait_for(lambda: self._check_mix() and "Connected to sink" in self.mix.log_text(), 90,
                 "the mix to fetch its document and dial the sink", interval=0.25)
        self.gen, self.gen_conn = self._spawn(node_tools.generator_main, tools_core, "127.0.0.1",
                                              self.mix.port, self.net.sender.link.private,
                                              self.net.sender.identity.public, self.mix.identity.public)
        self.pool = self.ctx.Pool(2)

    def _check_mix(self):
        self.net.check_alive()
        return True

    def _spawn(self, target, *args):
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=target, args=(child, *args), daemon=True)
        proc.start()
        return proc, parent

    def close(self):
        for conn in (getattr(self, "gen_conn", None), getattr(self, "sink_conn", None)):
            if conn is not None:
                try:
                    conn.send(("stop",))
                except OSError:
                    pass
        for proc in (self.gen, self.sink):
            if proc is not None:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
        if self.pool is not None:
            self.pool.terminate()
        self.net.close()
        if self.args.keep:
            print(f"# {self.mode}: kept {self.root}", flush=True)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- one step --------------------------------------------------------------------------

    def _has_document(self, epoch):
        try:
            self.net.document(epoch)
            return True
        except Exception:
            return False

    def build(self, count):
        epoch = self.net.clock.current()
        doc = self.net.document(epoch)
        desc = doc.node_by_identity(self.mix.identity.public)
        mix_private = keys.read_pem_key(str(self.mix.data_dir / f"mixkey-{epoch}.private.pem"),
                                        "X25519 PRIVATE KEY", 32)
        sink = self.net.sink
        args = [(min(BUILD_CHUNK, count - i), self.mix.identity.public, desc.mix_keys[epoch], mix_private,
                 sink.identity.public, sphinx.public_key(sink.mix_key(epoch)), NODE_DELAY_MS)
                for i in range(0, count, BUILD_CHUNK)]
        parts = self.pool.map(node_tools.build_chunk, args)
        return np.concatenate([p for p, _ in parts]), np.concatenate([a for _, a in parts])

    def step(self, rate, seconds, on_send=None):
        """One step of offered load; `on_send()`, if given, is called as the sending starts
        (bench/profile_node.py starts its profiler there)."""
        # Packets are built for the current epoch's key: start a step only with room for the
        # build and the send before the rollover (the mix accepts the old key only briefly).
        till = self.net.clock.till_next()
        if till < 2 * seconds + 15:
            time.sleep(till + 1.0)
            wait_for(lambda: self._has_document(self.net.clock.current()), 60, "the new epoch's document")
        count = int(rate * seconds)
        packets, alphas = self.build(count)
        packets_path, times_path = self.root / "packets.npy", self.root / "sent.npy"
        np.save(packets_path, packets)
        del packets
        pid = self.mix.proc.pid
        drops0 = self.mix.drops()
        if on_send is not None:
            on_send()
        cpu0, wall0, stages0 = proc_cpu_seconds(pid), time.monotonic(), thread_cpu_seconds(pid)
        self.gen_conn.send(("run", str(packets_path), rate, str(times_path)))
        rss_samples = []
        while not self.gen_conn.poll(0.25):
            rss_samples.append(proc_rss_mb(pid))
            self.rss_trace.append((round(time.monotonic() - self.t0, 2), rss_samples[-1]))
        self.gen_conn.recv()
        send_wall = time.monotonic() - wall0
        time.sleep(DRAIN_SECONDS)
        cpu = proc_cpu_seconds(pid) - cpu0
        stages = {k: v - stages0.get(k, 0.0) for k, v in thread_cpu_seconds(pid).items()}
        self.sink_conn.send(("collect", str(self.root / "received.npz")))
        self.sink_conn.recv()
        received = np.load(self.root / "received.npz")
        sent_at = np.load(times_path)
        row = self._row(rate, count, alphas, sent_at, received, send_wall, cpu,
                        max(rss_samples + [proc_rss_mb(pid)]), pid)
        row["stage_cpu_us_per_packet"] = {k: round(v / max(row["forwarded"], 1) * 1e6, 1)
                                          for k, v in stages.items()}
        drops = self.mix.drops()
        row["drops"] = {k: v - drops0.get(k, 0) for k, v in drops.items() if v - drops0.get(k, 0)}
        return row

    def _row(self, rate, count, alphas, sent_at, received, send_wall, cpu, rss, pid):
        index = {alphas[i].tobytes(): i for i in range(len(alphas))}
        latencies = []
        for alpha, t in zip(received["alphas"], received["times"]):
            i = index.get(alpha.tobytes())
            if i is not None:
                latencies.append((t - sent_at[i]) / 1e6 - NODE_DELAY_MS)
        forwarded = len(latencies)
        lat = np.array(latencies) if latencies else np.zeros(1)
        span = (sent_at.max() - sent_at.min()) / 1e9 if len(sent_at) > 1 else send_wall
        return {
            "mode": self.mode, "loop": self.args.loop, "offered_pps": rate,
            "achieved_send_pps": round(count / max(span, 1e-9)),
            "sent": count, "forwarded": forwarded, "forwarded_pps": round(forwarded / max(span, 1e-9)),
            "loss": round(1 - forwarded / count, 5),
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 3),
            "latency_p99_ms": round(float(np.percentile(lat, 99)), 3),
            "node_cpu_us_per_packet": round(cpu / max(forwarded, 1) * 1e6, 1),
            "node_cpu_share": round(cpu / (send_wall + DRAIN_SECONDS), 3),
            "rss_mb": round(rss, 1), "rss_peak_mb": round(proc_rss_mb(pid, "VmHWM"), 1),
            # The added-latency distribution as quantiles (enough to draw its CDF).
            "latency_quantiles_ms": {str(q): round(float(np.percentile(lat, q)), 3) for q in LATENCY_QUANTILES},
        }


def run_mode(args, mode, rss_traces=None):
    """The rows of one mode's steps; its RSS trace goes into `rss_traces[mode]` when given."""
    bench = Bench(args, mode)
    rows = []
    try:
        bench.start()
        for rate in args.rates:
            row = bench.step(rate, args.seconds)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in BULKY}), flush=True)
        if "Sphinx self-test" in bench.mix.log_text():
            line = [x for x in bench.mix.log_text().splitlines() if "Sphinx self-test" in x][-1]
            print(f"# {mode}: {line.split('server: ', 1)[-1]}", flush=True)
    finally:
        if rss_traces is not None:
            rss_traces[mode] = bench.rss_trace
        bench.close()
    return rows


def summarize(rows, baseline_pps):
    summary = {"baseline_unwrap_pps_one_core": round(baseline_pps)}
    for mode in sorted({r["mode"] for r in rows}):
        mine = [r for r in rows if r["mode"] == mode]
        clean = [r for r in mine if r["loss"] <= 0.001]
        best = max((r["offered_pps"] for r in clean), default=0)
        at_2k = next((r for r in mine if r["offered_pps"] == 2000), None)
        summary[mode] = {
            "max_no_loss_pps": best,
            "max_no_loss_vs_one_core_unwrap": round(best / baseline_pps, 3),
            "max_forwarded_pps": max(r["forwarded_pps"] for r in mine),
            "p99_ms_at_2000": at_2k["latency_p99_ms"] if at_2k else None,
            "rss_peak_mb": max(r["rss_peak_mb"] for r in mine),
            "targets": {
                f"no_loss_at_{TARGET_RATE}": best >= TARGET_RATE,
                f"p99_le_{TARGET_P99_MS}ms_at_2000": bool(at_2k and at_2k["latency_p99_ms"] <= TARGET_P99_MS),
                f"rss_le_{TARGET_RSS_MB}mb": max(r["rss_peak_mb"] for r in mine) <= TARGET_RSS_MB,
            },
        }
    return summary


def write_pyperf(path, rows, summary):
    """The figures as a pyperf suite (one benchmark per mode, step and metric)."""
    import pyperf

    benchmarks = []
    for row in rows:
        prefix = f"node_{row['mode']}_{row['loop']}_{row['offered_pps']}pps"
        for metric, unit, scale in (("forwarded_pps", "integer", 1), ("latency_p99_ms", "second", 1e-3),
                                    ("latency_p50_ms", "second", 1e-3),
                                    ("node_cpu_us_per_packet", "second", 1e-6), ("rss_mb", "byte", 2**20)):
            value = row[metric] * scale
            value = int(value) if unit in ("integer", "byte") else value
            run = pyperf.Run([max(value, 1e-9) if unit == "second" else max(value, 1)],
                             metadata={"name": f"{prefix}_{metric}", "unit": unit,
                                       "loops": 1}, collect_metadata=False)
            benchmarks.append(pyperf.Benchmark([run]))
    suite = pyperf.BenchmarkSuite(benchmarks)
    suite.dump(path, replace=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized run: two steps of 1.5 s, pinned only")
    ap.add_argument("--modes", default="pinned,shared")
    ap.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    ap.add_argument("--period", type=int, default=None,
                    help=f"test-network epoch period, s (default {BENCH_PERIOD}, --quick {QUICK_PERIOD})")
    ap.add_argument("--debug", action="append", default=[], metavar="'Knob = value'",
                    help="an extra [Debug] line for the mix (repeatable), e.g. 'SphinxQueuePackets = 256'")
    ap.add_argument("--keep", action="store_true", help="keep the network's directory (logs)")
    ap.add_argument("--json", help="write rows and summary as JSON")
    ap.add_argument("-o", "--output", help="write a pyperf JSON suite")
    args = ap.parse_args(argv)
    if args.quick:
        args.rates = args.rates or list(QUICK_RATES)
        args.seconds = args.seconds or 1.5
        args.modes = "pinned" if args.modes == "pinned,shared" else args.modes
        args.period = args.period or QUICK_PERIOD
    args.rates = args.rates or list(DEFAULT_RATES)
    args.seconds = args.seconds or 4.0
    args.period = args.period or BENCH_PERIOD
    return args


def run(args):
    """The whole benchmark: {"rows", "summary", "rss_trace_mb"} (also used by `python -m bench`)."""
    baseline = measure_unwrap_capacity(1, seconds=1.0).per_worker
    print(f"# baseline: one core unwraps {baseline:.0f} packets/s", flush=True)
    rows, traces = [], {}
    for mode in args.modes.split(","):
        rows += run_mode(args, mode, traces)
    summary = summarize(rows, baseline)
    print(json.dumps(summary, indent=1))
    return {"rows": rows, "summary": summary, "rss_trace_mb": traces}


def main():
    args = parse_args()
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.output:
        write_pyperf(args.output, result["rows"], result["summary"])


if __name__ == "__main__":
    main()
