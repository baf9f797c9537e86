"""A byte stream of sealed and raw frames into a link `Session` (the receive path: framing,
`_core.linkframe` decryption and rekeying, `parse_command`, the batched `recv_commands`).

The input is a list of operations: a command plaintext sealed by the peer's `FrameSealer` (the
peer holds the session's key, so the MACs are good and the fuzzer reaches the command decoder), a
sealed frame cut short, or raw bytes; between operations the receiver may run. Documented
outcome: the receiver gets exactly the commands sealed before the first fault, in order, and
then a `WireError` subclass (`ConnectionClosed` at a clean end of stream)."""
import asyncio
import logging

from katzenpost.wire import errors
from katzenpost.wire.commands import parse_command
from katzenpost.wire.framing import FrameSealer, FrameOpener
from katzenpost.wire.handshake import PeerCredentials
from katzenpost.wire.session import Session
from katzenpost.wire import commands as wc
from tests.fuzz.data import Reader
from tests.fuzz.logs import scoped_logger
from tests.fuzz.material import FRAME_KEY, derive

MAX_LEN = 8192
_LOOP = asyncio.new_event_loop()


class _Transport:
    def __init__(self):
        self.closing = False

    def abort(self):
        self.closing = True

    def is_closing(self):
        return self.closing

    def get_write_buffer_size(self):
        return 0

    def get_write_buffer_limits(self):
        return (0, 65536)


class _Writer:
    """What Session needs of an asyncio.StreamWriter; nothing is sent back in this harness."""

    def __init__(self):
        self.transport = _Transport()

    def write(self, data):
        pass

    async def drain(self):
        pass

    def close(self):
        self.transport.closing = True

    async def wait_closed(self):
        pass

    def get_extra_info(self, name, default=None):
        return default


def _plan(r: Reader):
    """(chunks to feed, commands expected, whether the stream stays clean to the end)."""
    sealer = FrameSealer(FRAME_KEY)
    chunks, expected, clean = [], [], True
    while r.remaining():
        op = r.byte() % 4
        if op == 0 or op == 1:
            plaintext = r.sized(2)
            frame = sealer.seal(plaintext)
            if op == 1:  # cut short: the stream is misaligned from here on
                frame = frame[:r.uint(2) % max(len(frame), 1)]
                clean = False
            elif clean:
                try:
                    expected.append(parse_command(plaintext))
                except errors.CommandError:
                    clean = False
            chunks.append(frame)
        elif op == 2:
            raw = r.sized(1)
            clean = clean and not raw
            chunks.append(raw)
        else:
            chunks.append(None)  # let the receiver run before the next chunk
    return chunks, expected, clean


async def _receive(session, received):
    while True:
        try:
            received.extend(await session.recv_commands(max_commands=4))
        except errors.WireError as exc:
            return exc


async def _run(chunks):
    reader = asyncio.StreamReader()
    session = Session(reader, _Writer(), FrameSealer(derive("unused")), FrameOpener(FRAME_KEY),
                      initiator=False, peer_credentials=PeerCredentials(b"", bytes(32)),
                      can_send=True, handshake_hash=bytes(64), clock_skew=None, peer_name="fuzz")
    received = []
    task = asyncio.ensure_future(_receive(session, received))
    for chunk in chunks:
        if chunk is None:
            await asyncio.sleep(0)
        else:
            reader.feed_data(chunk)
    reader.feed_eof()
    error = await asyncio.wait_for(task, 10)
    assert session.closed, "the session survived the end of its stream"
    return received, error


def TestOneInput(data: bytes) -> None:
    chunks, expected, clean = _plan(Reader(data))
    # every input closes a session, which the wire logs; silenced for this input only
    with scoped_logger("katzenpost.wire", level=logging.CRITICAL):
        received, error = _LOOP.run_until_complete(_run(chunks))
    assert received == expected[:len(received)], "received commands differ from those sealed"
    if clean:
        assert received == expected, f"{len(received)} of {len(expected)} commands received"
        assert isinstance(error, errors.ConnectionClosed), repr(error)


def _sealed(command) -> bytes:
    body = command.to_bytes()
    return bytes([0]) + len(body).to_bytes(2, "big") + body


def seeds():
    packet = wc.SendPacket(derive("packet", 200))
    return {
        "noop": _sealed(wc.NoOp()),
        "packets": _sealed(packet) + b"\x03" + _sealed(packet) + _sealed(wc.Disconnect()),
        "message": _sealed(wc.RetrieveMessage(1)) + _sealed(wc.MessageEmpty(1)),
        "cut": _sealed(wc.NoOp()) + b"\x01" + _sealed(packet)[1:] + b"\x00\x10",
        "garbage": _sealed(wc.NoOp()) + b"\x02\x05hello",
    }
