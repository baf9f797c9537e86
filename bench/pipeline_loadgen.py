"""Load generator process for bench_pipeline.py: offers framed packets at a fixed rate over TCP.

Stays up between steps: each stdin line `<rate> <seconds> <first_key> <log.npz>` runs one step on
a fresh connection, saves (key, send_ns) per packet and prints `<sent> <elapsed>`. Benchmark only.
"""
import argparse
import socket
import struct
import sys
import time

import numpy as np

from katzenpost._core import unwrap_standin
from katzenpost.sphinx import geometry

L = geometry.PACKET_LENGTH
PREFIX = L.to_bytes(4, "big")
FRAME = 4 + L
STAMP_OFFSET = 200          # stand-in mode: the sink reads the 8-byte key here (left unchanged)
TICK_S = 0.0005


def standin_template(delay_ms, next_hop):
    packet = bytearray(L)
    unwrap_standin.encode_standin_packet(
        packet, flags=unwrap_standin.FLAG_NEXT_HOP | unwrap_standin.FLAG_NODE_DELAY,
        delay_ms=delay_ms, next_hop=next_hop, tag=b"")
    return bytes(packet)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay-ms", type=int, default=5)
    ap.add_argument("--next-hop", default="00" * 32)
    ap.add_argument("--packets", help="sphinx mode: .npz with packets uint8[N,L] and keys uint64[N]")
    args = ap.parse_args()
    packets = pool_keys = None
    if args.packets:
        pool = np.load(args.packets)
        packets, pool_keys = pool["packets"], pool["keys"]
    template = bytearray(PREFIX + standin_template(args.delay_ms, bytes.fromhex(args.next_hop)))
    print("ready", flush=True)
    for line in sys.stdin:
        rate, seconds, first_key, log = line.split()
        run_step(args.port, float(rate), float(seconds), int(first_key), log, template, packets, pool_keys)


def run_step(port, rate, seconds, first_key, log, template, packets, pool_keys):
    total = int(rate * seconds)
    if packets is not None and first_key + total > len(packets):
        sys.exit(f"loadgen: packet pool of {len(packets)} too small for {first_key + total}")
    keys = np.zeros(total, dtype=np.uint64)
    send_ns = np.zeros(total, dtype=np.int64)

    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    chunk = bytearray(FRAME * max(1, int(rate * TICK_S * 4) + 16))
    start = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        count = min(due - sent, len(chunk) // FRAME)
        if count <= 0:
            time.sleep(TICK_S)
            continue
        now = time.monotonic_ns()
        for i in range(count):
            key = first_key + sent + i
            off = i * FRAME
            if packets is not None:
                chunk[off:off + 4] = PREFIX
                chunk[off + 4:off + FRAME] = packets[key].data
                keys[sent + i] = pool_keys[key]
            else:
                chunk[off:off + FRAME] = template
                struct.pack_into(">Q", chunk, off + 4 + unwrap_standin.OFF_TAG, key)   # unique replay tag
                struct.pack_into(">Q", chunk, off + 4 + STAMP_OFFSET, key)
                keys[sent + i] = key
            send_ns[sent + i] = now
        sock.sendall(memoryview(chunk)[:count * FRAME])
        sent += count
    elapsed = time.monotonic() - start
    sock.close()
    np.savez(log, keys=keys, send_ns=send_ns)
    print(f"{sent} {elapsed:.4f}", flush=True)


if __name__ == "__main__":
    main()
