"""Long floods against ONE real `katzenpost -f` mix on 127.0.0.1 (the CI runs short versions:
tests/test_flood_*.py; docs/reliability.md, "Floods").

    .venv/bin/python bench/flood.py [--kind load,connections,slow] [--seconds 60] [--factor 10]
        [--connections 10000] [--waves 5] [--workers 1] [--period 120] [--json out.json] [--keep]

- load: a previous-layer peer offers `--factor` x the mix's self-test capacity for `--seconds`
  (valid packets round and round, so replays, and packets that fail the unwrap); reports the
  offered and forwarded rates, drops by reason, RSS against the ceiling derived from the
  configured bounds, STATUS and new-handshake times, the PKI fetch delay.
- connections: `--waves` bursts of `--connections` idle or half-open connections, each held for
  the handshake timeout, while an established peer sends; reports refused connections, the peak
  and final descriptor counts, the legit peer's losses.
- slow: a next hop that stops reading while another reads everything (`--seconds` of 2,000
  packets/s); reports the slow peer's queue, drops by reason, what reached the reader.

Every figure is printed as one JSON line per flood; nothing is asserted. Each flood runs on a
fresh network (authority, mix, helper processes), all killed at the end.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from flood_support import FloodNet, cleanup, raise_fd_limit  # noqa: E402
from flood_scenarios import (connection_flood, load_flood, slow_reader_flood,  # noqa: E402
                             slow_reader_packets, timing_knobs)

SLOW_RATE = 2000


def run(kind, args):
    root = Path(tempfile.mkdtemp(prefix=f"kp-flood-{kind}-"))
    if kind == "load":
        net = FloodNet(root, workers=args.workers, period=args.period)
    elif kind == "connections":
        raise_fd_limit(args.connections + 1024)
        net = FloodNet(root, period=args.period, debug=timing_knobs())
    else:
        net = FloodNet(root, period=args.period, slow_sender=True,
                       debug=dict(timing_knobs(), SphinxQueuePackets=4096))
    started = time.monotonic()
    try:
        net.start()
        if kind == "load":
            figures = load_flood(net, args.seconds, factor=args.factor, workers=args.workers)
        elif kind == "connections":
            figures = connection_flood(net, connections=args.connections, waves=args.waves,
                                       legit_packets=int(args.seconds * 150), legit_rate=150)
        else:
            per_peer = max(slow_reader_packets(), int(args.seconds * SLOW_RATE / 2))
            figures = slow_reader_flood(net, per_peer=per_peer, rate=SLOW_RATE)
    finally:
        net.close()
        if args.keep:
            print(f"# {kind}: kept {root}", flush=True)
        else:
            cleanup(root)
    figures = dict(kind=kind, wall_s=round(time.monotonic() - started, 1), **figures)
    print(json.dumps(figures), flush=True)
    return figures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", default="load,connections,slow")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the load and slow floods")
    ap.add_argument("--factor", type=float, default=10.0, help="offered load / self-test capacity")
    ap.add_argument("--connections", type=int, default=10000, help="connections per wave")
    ap.add_argument("--waves", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1, help="the mix's crypto workers (load flood)")
    ap.add_argument("--period", type=int, default=120, help="test-network epoch period, s")
    ap.add_argument("--json", help="write every flood's figures as a JSON list")
    ap.add_argument("--keep", action="store_true", help="keep the networks' directories (logs)")
    args = ap.parse_args()
    results = [run(kind, args) for kind in args.kind.split(",")]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
