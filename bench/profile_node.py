"""Where a mix spends its time under load: a real `katzenpost -f` node driven by bench_node.py's
generator and sink (its Bench, reused as is), sampled from outside by py-spy with native frames
(the Cython cores, OpenSSL, libzmq), every thread.

    .venv/bin/pip install -e '.[profile]'        # py-spy
    .venv/bin/python bench/profile_node.py [--rate 9000] [--seconds 10] [--mode pinned|shared]
        [--hz 200] [--out DIR]
    .venv/bin/python bench/profile_node.py --profile-command-overhead [--rate 9000] [--rounds 2]

Writes into DIR (default ./profile-node-<UTC time>):
    pyspy.raw       py-spy's collapsed stacks ("thread (tid): name;outer;...;inner samples"),
                    the input of the usual flame-graph tools and of speedscope
    flamegraph.svg  the same as a flame graph (katzenpost.server.flamegraph, frames merged per
                    function: line numbers and native addresses dropped)
    summary.txt     per thread group (I/O thread, crypto workers, other): busy samples as CPU
                    microseconds per forwarded packet, the top frames by self and by inclusive
                    time, beside the node's per-thread CPU from /proc and bench_node's row
    row.json        bench_node's row for the step (rate, loss, latency, CPU per packet)

py-spy reads the node's memory through ptrace: it must run as root or with CAP_SYS_PTRACE (or
kernel.yama.ptrace_scope 0); the script says so when the kernel refuses. Samples of idle threads
(waiting in epoll or zmq) are left out by py-spy, so the figures are busy time.

--profile-command-overhead measures the management command PROFILE instead (the in-process
sampler, no py-spy): steps alternately without and with a PROFILE recording running, on a node
with `EnableProfiling = true`, and prints the node's CPU per packet and latency for both.
"""
import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_node  # noqa: E402  (puts the checkout and tests/ on sys.path)

from katzenpost.server import flamegraph  # noqa: E402

TOP = 15
GROUPS = ("I/O thread", "crypto workers", "other threads")
# A sample whose innermost frames include one of these is a thread waiting, not working: py-spy
# cannot always tell (with --native it samples threads blocked in C), so the summary does.
WAITS = {"epoll_wait", "epoll_pwait", "poll", "ppoll", "select", "pselect", "zmq_poll",
         "pthread_cond_wait", "pthread_cond_timedwait", "sem_wait", "sem_timedwait", "nanosleep",
         "clock_nanosleep", "PyThread_acquire_lock_timed", "futex_wait"}
_LINE = re.compile(r":\d+\)$")
_ADDRESS = re.compile(r"^0x[0-9a-f]+ \((.*)\)$")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=9000, help="offered packets/s")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the profiled step")
    ap.add_argument("--mode", choices=("pinned", "shared"), default="pinned")
    ap.add_argument("--hz", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    ap.add_argument("--period", type=int, default=120, help="test-network epoch period, s")
    ap.add_argument("--debug", action="append", default=[], metavar="'Knob = value'",
                    help="an extra [Debug] line for the mix (repeatable)")
    ap.add_argument("--out", help="output directory (default ./profile-node-<UTC time>)")
    ap.add_argument("--profile-command-overhead", action="store_true",
                    help="measure the PROFILE management command's overhead instead")
    ap.add_argument("--rounds", type=int, default=2, help="--profile-command-overhead: off/on pairs")
    return ap.parse_args(argv)


def bench_args(args, extra_debug=()):
    """bench_node's own argument namespace for one mode (its defaults, our overrides)."""
    argv = ["--modes", args.mode, "--loop", args.loop, "--period", str(args.period),
            "--seconds", str(args.seconds), "--rates", str(args.rate)]
    for line in [*args.debug, *extra_debug]:
        argv += ["--debug", line]
    return bench_node.parse_args(argv)


# ------------------------------------------------------------------ py-spy

def py_spy():
    path = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(path):
        sys.exit("profile_node: py-spy is not installed (pip install -e '.[profile]')")
    return path


def start_py_spy(pid, seconds, hz, raw_path, core):
    command = [py_spy(), "record", "--pid", str(pid), "--native", "--threads", "--rate", str(hz),
               "--duration", str(max(1, round(seconds))), "--format", "raw", "--output", str(raw_path)]
    if core is not None:
        command = ["taskset", "-c", str(core), *command]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_py_spy(proc, timeout):
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    if proc.returncode != 0:
        hint = ""
        if re.search(r"permission|ptrace|EPERM|Operation not permitted", output, re.I):
            hint = ("\nThe kernel refused ptrace: run as root or with CAP_SYS_PTRACE, or set "
                    "kernel.yama.ptrace_scope to 0 (see /proc/sys/kernel/yama/ptrace_scope).")
        sys.exit(f"profile_node: py-spy failed ({proc.returncode}):\n{output.strip()}{hint}")
    return output


# ------------------------------------------------------------------ the collapsed stacks

def read_raw(path):
    """[(thread name, frames outermost first, samples)] from py-spy's raw output."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, *frames = stack.split(";")
        name = thread.split(": ", 1)[1] if ": " in thread else thread
        rows.append((name, [function_of(f) for f in frames], int(count)))
    return rows


def function_of(frame):
    """A frame label per function: 'f (file.py:12)' -> 'f (file.py)', '0x7f.. (lib.so)' -> '[lib.so]'."""
    address = _ADDRESS.match(frame)
    if address:
        return f"[{address.group(1)}]"
    return _LINE.sub(")", frame)


def group_of(thread_name):
    if thread_name == "MainThread":
        return GROUPS[0]
    if thread_name.startswith("katzenpost-crypto"):
        return GROUPS[1]
    return GROUPS[2]


def is_waiting(frames):
    return any(frame.split(" (", 1)[0] in WAITS for frame in frames[-3:])


def is_python(frame):
    return frame.endswith(".py)") or frame.endswith(".pyx)")


def summarize(rows):
    """Per group: busy and waiting samples, and the busy samples' top frames: by self time
    (innermost frame with a symbol: stripped native callees count for their caller), by
    innermost Python/Cython function (its native callees included), and inclusive."""
    result = {}
    for group in GROUPS:
        mine = [(frames, n) for name, frames, n in rows if group_of(name) == group]
        views = {"self": collections.Counter(), "python": collections.Counter(),
                 "inclusive": collections.Counter()}
        waiting = 0
        for frames, n in mine:
            if is_waiting(frames):
                waiting += n
                continue
            named = [f for f in frames if not f.startswith("[")] or frames or ["?"]
            views["self"][named[-1]] += n
            views["python"][next((f for f in reversed(frames) if is_python(f)), "(no Python frame)")] += n
            for frame in set(frames):
                views["inclusive"][frame] += n
        total = sum(n for _, n in mine)
        busy = total - waiting
        # Frames in (nearly) every busy sample are the thread's roots: no information.
        views["inclusive"] = collections.Counter({f: n for f, n in views["inclusive"].items()
                                                  if n < 0.98 * busy})
        result[group] = {"samples": busy, "waiting": waiting,
                         **{key: view.most_common(TOP) for key, view in views.items()}}
    return result


def format_summary(args, row, stages, summary):
    """The text report. Samples are wall-clock (a runnable thread waiting for a core counts as
    busy), so a frame's microseconds per packet are its share of its group's busy samples times
    that group's CPU per packet from /proc (I/O thread: the main thread; crypto workers: every
    other Python thread, the rest of them being idle executors)."""
    cpu_of = {GROUPS[0]: stages.get("io_thread"), GROUPS[1]: stages.get("workers_and_other_threads")}
    lines = [f"profile_node: {args.mode} mode, {args.rate} packets/s offered for {args.seconds:g} s, "
             f"py-spy {args.hz} Hz with native frames",
             f"forwarded {row['forwarded']} (loss {row['loss']:.2%}), added latency p50 "
             f"{row['latency_p50_ms']} ms, p99 {row['latency_p99_ms']} ms",
             f"node CPU per forwarded packet (/proc): {row['node_cpu_us_per_packet']} us = "
             + ", ".join(f"{k} {v} us" for k, v in stages.items()), ""]
    for group in GROUPS:
        block = summary[group]
        cpu = cpu_of.get(group)
        per = cpu / max(block["samples"], 1) if cpu is not None else 0.0
        lines.append(f"== {group}: {block['samples']} busy samples"
                     + (f" = {cpu} us of CPU per forwarded packet (/proc)" if cpu is not None else "")
                     + f"; {block['waiting']} more samples waiting in poll/epoll/locks, left out")
        for title, key in (("self (innermost frame with a symbol)", "self"),
                           ("innermost Python/Cython function (native callees included)", "python"),
                           ("inclusive (anywhere in the stack; the thread's roots left out)", "inclusive")):
            lines.append(f"  {title}:")
            for frame, n in block[key]:
                share = 100.0 * n / max(block["samples"], 1)
                lines.append(f"    {n * per:8.2f} us/pkt {share:5.1f} %  {frame}" if cpu is not None
                             else f"    {share:5.1f} %  {frame}")
        lines.append("")
    return "\n".join(lines)


def write_outputs(out, rows, summary_text, row, title):
    stacks = collections.Counter()
    for name, frames, n in rows:
        stacks[(name, *frames)] += n
    (out / "flamegraph.svg").write_text(flamegraph.render_svg(stacks, title), encoding="utf-8")
    (out / "summary.txt").write_text(summary_text + "\n", encoding="utf-8")
    (out / "row.json").write_text(json.dumps(row, indent=1), encoding="utf-8")


# ------------------------------------------------------------------ the runs

def profile(args):
    out = Path(args.out or f"profile-node-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "pyspy.raw"
    bench = bench_node.Bench(bench_args(args), args.mode)
    spy = []
    try:
        bench.start()
        bench.step(min(args.rate, 2000), 2)                  # warm-up: sessions, caches, JIT-free paths
        pid = bench.mix.proc.pid
        tools_core = 1 if args.mode == "pinned" else None
        row = bench.step(args.rate, args.seconds,
                         on_send=lambda: spy.append(start_py_spy(pid, args.seconds, args.hz, raw, tools_core)))
        print(finish_py_spy(spy[0], timeout=args.seconds + 60).strip().splitlines()[-1], flush=True)
    finally:
        if spy and spy[0].poll() is None:
            spy[0].kill()
        bench.close()
    rows = read_raw(raw)
    summary = summarize(rows)
    text = format_summary(args, row, row.get("stage_cpu_us_per_packet", {}), summary)
    title = f"katzenpost mix, {args.rate} packets/s ({args.mode}), py-spy {args.hz} Hz native"
    write_outputs(out, rows, text, row, title)
    print(text)
    print(f"# written to {out}")


def profile_command_overhead(args):
    """Steps alternately without and with a PROFILE recording (the in-process sampler)."""
    bench = bench_node.Bench(bench_args(args, ["EnableProfiling = true"]), args.mode)
    results = {"off": [], "on": []}
    seconds = min(int(args.seconds) + 2, 60)         # covers the whole sending of the step

    def start_recording():
        reply = bench.mix.management(f"PROFILE {seconds}")[-1]
        if not reply.startswith("250 "):
            raise RuntimeError(f"PROFILE refused: {reply}")

    try:
        bench.start()
        bench.step(min(args.rate, 2000), 2)
        for _ in range(args.rounds):
            for state in ("off", "on"):
                row = bench.step(args.rate, args.seconds, on_send=start_recording if state == "on" else None)
                results[state].append(row)
                print(state, json.dumps({k: row[k] for k in ("forwarded", "loss", "latency_p50_ms",
                                                            "latency_p99_ms", "node_cpu_us_per_packet")}),
                      flush=True)
                if state == "on":
                    time.sleep(seconds)                  # the recording ends before the next step
    finally:
        bench.close()
    for state, rows in results.items():
        cpu = [r["node_cpu_us_per_packet"] for r in rows]
        p99 = [r["latency_p99_ms"] for r in rows]
        print(f"PROFILE {state}: node CPU/packet {sum(cpu) / len(cpu):.1f} us ({cpu}), p99 {p99} ms")


def main():
    args = parse_args()
    if args.profile_command_overhead:
        profile_command_overhead(args)
    else:
        profile(args)


if __name__ == "__main__":
    main()
