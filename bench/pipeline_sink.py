"""Sink process for bench_pipeline.py: accepts the node's framed stream and logs (key, recv_ns).

Commands on stdin: `dump <path>` saves and resets the log, then prints `ok <count>`; `quit`.
Benchmark only.
"""
import argparse
import array
import select
import socket
import sys
import time

import numpy as np

from katzenpost.sphinx import geometry

L = geometry.PACKET_LENGTH
FRAME = 4 + L


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--key-offset", type=int, default=200)
    args = ap.parse_args()
    off = 4 + args.key_offset
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    print(listener.getsockname()[1], flush=True)
    conns = []
    buffers = {}
    keys, recv_ns = array.array("Q"), array.array("q")
    bad = 0
    while True:
        ready, _, _ = select.select([listener, sys.stdin, *conns], [], [])
        for r in ready:
            if r is listener:
                conn, _ = listener.accept()
                conns.append(conn)
                buffers[conn] = bytearray()
            elif r is sys.stdin:
                line = sys.stdin.readline().split()
                if not line or line[0] == "quit":
                    return
                if line[0] == "dump":
                    np.savez(line[1], keys=np.frombuffer(keys, np.uint64), recv_ns=np.frombuffer(recv_ns, np.int64))
                    print(f"ok {len(keys)} {bad}", flush=True)
                    keys, recv_ns = array.array("Q"), array.array("q")
            else:
                data = r.recv(1 << 20)
                now = time.monotonic_ns()
                if not data:
                    conns.remove(r)
                    del buffers[r]
                    continue
                buf = buffers[r]
                buf += data
                n = len(buf) // FRAME
                for i in range(n):
                    base = i * FRAME
                    if int.from_bytes(buf[base:base + 4], "big") != L:
                        bad += 1
                    keys.append(int.from_bytes(buf[base + off:base + off + 8], "big"))
                    recv_ns.append(now)
                del buf[:n * FRAME]


if __name__ == "__main__":
    main()
