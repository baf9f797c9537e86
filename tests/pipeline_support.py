"""Helpers for the pipeline tests: stand-in packets, a recording sender, the real timer wheel and
replay filter.
"""
import asyncio
import os

from katzenpost._core import unwrap_standin
from katzenpost.sphinx import geometry

L = geometry.PACKET_LENGTH
FWD = unwrap_standin.FLAG_NEXT_HOP | unwrap_standin.FLAG_NODE_DELAY


def make_packet(flags=FWD, delay_ms=0, next_hop=b"", recipient=b"", surb_id=b"", status=0, tag=None,
                stamp=b""):
    packet = bytearray(L)
    unwrap_standin.encode_standin_packet(packet, flags=flags, delay_ms=delay_ms,
                                         tag=os.urandom(32) if tag is None else tag, next_hop=next_hop,
                                         recipient=recipient, surb_id=surb_id, status=status)
    packet[200:200 + len(stamp)] = stamp
    return bytes(packet)


def wheel_factory():
    from katzenpost._core.wheel import TimerWheel
    return TimerWheel


def replay_filter(tmp_path):
    from katzenpost.server.replay import ReplayFilter
    return ReplayFilter.create(str(tmp_path / f"replay-{os.urandom(4).hex()}"), 100_000, 1e-6)


class RecordingSender:
    """A PacketSender that keeps what it is given; can be paused like a full transport."""

    def __init__(self):
        self.packets = []
        self.paused = False
        self.fail_wait = None            # an exception wait_writable raises (a session that died)
        self._resumed = asyncio.Event()

    def can_send(self):
        return not self.paused

    def send_packets(self, packets):
        assert not self.paused
        self.packets.extend(bytes(row) for row in packets)

    async def wait_writable(self):
        if self.fail_wait is not None:
            raise self.fail_wait
        while self.paused:
            self._resumed.clear()
            await self._resumed.wait()

    def resume(self):
        self.paused = False
        self._resumed.set()
