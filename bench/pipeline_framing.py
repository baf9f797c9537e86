"""Benchmark/test transport: 4-byte big-endian length prefix + packet over TCP, standing in for the
link protocol (the real wire sessions replace it). Not used by the node in production.
"""
import asyncio
import functools
import time

import numpy as np

from katzenpost.sphinx import geometry

L = geometry.PACKET_LENGTH
PREFIX = L.to_bytes(4, "big")
FRAME = 4 + L
PREFIX_ARRAY = np.frombuffer(PREFIX, dtype=np.uint8)


class FramedIngressProtocol(asyncio.Protocol):
    """Server side: parses frames and hands each packet to `submit(packet, recv_at_ns)`; with
    `end_of_read`, calls it once per read after the last packet of that read."""

    def __init__(self, submit, on_close=None, end_of_read=None):
        self._submit = submit
        self._on_close = on_close
        self._end_of_read = end_of_read
        self._buf = bytearray()
        self.transport = None
        self.bad_frames = 0

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        now = time.monotonic_ns()
        buf = self._buf
        buf += data
        end = len(buf)
        if end < FRAME:
            return
        submit = self._submit
        pos = 0
        with memoryview(buf) as view:
            while end - pos >= FRAME:
                if not buf.startswith(PREFIX, pos):
                    # The link protocol closes a connection that sends a packet of the wrong size.
                    self.bad_frames += 1
                    self.transport.close()
                    break
                submit(view[pos + 4:pos + FRAME], now)
                pos += FRAME
        del buf[:pos]
        if self._end_of_read is not None:
            self._end_of_read()

    @classmethod
    def for_pipeline(cls, pipeline, on_close=None):
        """Feeding a Pipeline: one flush per read instead of one per event-loop pass."""
        return cls(functools.partial(pipeline.submit, caller_flushes=True), on_close, pipeline.end_of_read)

    def connection_lost(self, exc):
        if self._on_close:
            self._on_close(self)


class FramedSender(asyncio.Protocol):
    """Client side: a PacketSender (can_send / send_packets / wait_writable) over one TCP stream."""

    def __init__(self):
        self.transport = None
        self._paused = False
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, transport):
        self.transport = transport

    def pause_writing(self):
        self._paused = True
        self._writable.clear()

    def resume_writing(self):
        self._paused = False
        self._writable.set()

    def can_send(self):
        return not self._paused and self.transport is not None and not self.transport.is_closing()

    def send_packets(self, packets):
        """Write uint8[k, L] `packets` as k frames in one write."""
        framed = np.empty((len(packets), FRAME), dtype=np.uint8)
        framed[:, :4] = PREFIX_ARRAY
        framed[:, 4:] = packets
        self.transport.write(framed.data)

    async def wait_writable(self):
        await self._writable.wait()


class RelayIngressProtocol(FramedIngressProtocol):
    """Baseline for the benchmark: forwards each frame straight to a sender, no pipeline."""

    def __init__(self, sender):
        self._pending = []
        self._sender = sender
        self._scheduled = False
        super().__init__(self._relay)

    def _relay(self, packet, recv_at_ns):
        self._pending.append(packet.tobytes())       # one copy per packet, as the pipeline makes
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self):
        self._scheduled = False
        packets, self._pending = self._pending, []
        if packets and self._sender.can_send():
            self._sender.send_packets(np.frombuffer(b"".join(packets), np.uint8).reshape(-1, L))
