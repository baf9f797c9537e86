"""Link sessions over real TCP on 127.0.0.1: handshake, NoOp finalisation, authentication,
framed commands, the Go transcript on the wire, and the bad-input suite (the Wire Protocol Specification,
and the reference server's connection rules). Every test is bounded in time and checks that no task or socket leaks."""
import asyncio
import contextlib
import gc
import logging
import os
import struct
import warnings

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from wire_support import INITIATOR_LABEL, RESPONDER_LABEL, ShakeStream, load_transcript
from katzenpost.sphinx.geometry import PACKET_LENGTH
from katzenpost.wire import (AuthenticationError, CommandError, ConnectError, ConnectionClosed,
                             FrameError, HandshakeError, HandshakeTimeout, PeerCredentials, WireError,
                             WireTimeout, accept, connect)
from katzenpost.wire.commands import (Consensus, Disconnect, GetConsensus, NoOp, SendPacket,
                                      parse_command)
from katzenpost.wire.framing import FrameOpener, FrameSealer
from katzenpost.wire.handshake import MSG1_LENGTH, MSG2_LENGTH, MSG3_LENGTH, Handshake
from katzenpost.wire.kem import KyberPyKyber1024
from katzenpost.reference.linkframe import rekey

TEST_TIMEOUT = 20.0
LOOPBACK = "127.0.0.1"


def allow(creds):
    return True


def run(coro_fn, timeout: float = TEST_TIMEOUT):
    """Run a test coroutine with a hard bound, then check it left no task, socket or transport."""
    async def wrapper():
        result = await asyncio.wait_for(coro_fn(), timeout)
        await asyncio.sleep(0)
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for _ in range(50):
            leftover = [t for t in leftover if not t.done()]
            if not leftover:
                break
            await asyncio.sleep(0.02)
        assert not leftover, f"leaked tasks: {leftover}"
        return result
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = asyncio.run(wrapper())
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked, f"leaked sockets or transports: {leaked}"
    return result


class Listener:
    """Our responder: accept() on every connection, then optionally a receive loop."""

    def __init__(self, **accept_options) -> None:
        self.options = {"link_key": os.urandom(32), "additional_data": b"node-identity",
                        "authenticator": allow, "handshake_timeout": 5.0, **accept_options}
        self.sessions: asyncio.Queue = asyncio.Queue()
        self.received: asyncio.Queue = asyncio.Queue()
        self.recv_loop = False
        self._server = None

    async def __aenter__(self):
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info):
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader, writer):
        try:
            session = await accept(reader, writer, **self.options)
        except WireError as exc:
            await self.sessions.put(exc)
            return
        except BaseException as exc:  # surfaces in the test as a wrong type
            await self.sessions.put(("escaped", exc))
            raise
        await self.sessions.put(session)
        if not self.recv_loop:
            return
        while True:
            try:
                await self.received.put(await session.recv_command())
            except WireError as exc:
                await self.received.put(exc)
                return
            except BaseException as exc:
                await self.received.put(("escaped", exc))
                raise

    async def connect_pair(self, additional_data: bytes = b"", **options):
        """(our initiator session, the listener's responder session) over 127.0.0.1."""
        options = {"link_key": os.urandom(32), "authenticator": allow, "handshake_timeout": 5,
                   **options}
        session = await connect(LOOPBACK, self.port, additional_data=additional_data, **options)
        return session, await self.sessions.get()

    @property
    def public_key(self) -> bytes:
        return Handshake(initiator=True, link_key=self.options["link_key"],
                         additional_data=b"")._static_public


class RawInitiator:
    """A hand-driven initiator (sans-I/O Handshake over a raw stream) for sending bad input."""

    async def open(self, port: int, *, finish: bool = True, additional_data: bytes = b"client"):
        self.reader, self.writer = await asyncio.open_connection(LOOPBACK, port)
        self.handshake = Handshake(initiator=True, link_key=os.urandom(32),
                                   additional_data=additional_data)
        if finish:
            self.writer.write(self.handshake.write_message())
            self.handshake.read_message(await self.reader.readexactly(MSG2_LENGTH))
            self.writer.write(self.handshake.write_message())
            tx, rx = self.handshake.split()
            self.current_tx_key, self.sealer, self.opener = tx, FrameSealer(tx), FrameOpener(rx)
            first = await self.read_frame()
            assert isinstance(first, NoOp)
        return self

    def seal(self, command: bytes) -> bytes:
        """Seal like the real sender, tracking the rekeyed key so headers can be forged."""
        self.current_tx_key = rekey(self.current_tx_key)
        return self.sealer.seal(command)

    async def read_frame(self):
        body_length = self.opener.open_header(await self.reader.readexactly(20))
        return parse_command(self.opener.open_body(await self.reader.readexactly(body_length)))

    async def expect_closed(self) -> bytes:
        """The peer must close: read to EOF (bounded) and return whatever arrived."""
        data = await asyncio.wait_for(self.reader.read(), 5)
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass
        return data

    def forged_header(self, body_length: int) -> bytes:
        nonce = struct.pack("<4xQ", self.sealer.nonce)
        return ChaCha20Poly1305(self.current_tx_key).encrypt(nonce, struct.pack(">I", body_length), None)


# -- happy paths -----------------------------------------------------------------------------

def test_session_exchanges_commands_both_ways_and_closes_cleanly():
    async def scenario():
        async with Listener() as listener:
            client_key = os.urandom(32)
            seen = []
            session = await connect(LOOPBACK, listener.port, link_key=client_key,
                                    additional_data=b"alice",
                                    authenticator=lambda c: seen.append(c) or (True, True),
                                    handshake_timeout=5)
            server_session = await listener.sessions.get()
            assert seen == [PeerCredentials(b"node-identity", listener.public_key)]
            assert server_session.peer_credentials.additional_data == b"alice"
            assert session.handshake_hash == server_session.handshake_hash
            assert session.can_send and server_session.can_send and session.initiator
            packet = os.urandom(PACKET_LENGTH)
            await session.send_command(SendPacket(packet))
            await session.send_command(GetConsensus(77))
            assert await server_session.recv_command() == SendPacket(packet)
            assert await server_session.recv_command() == GetConsensus(77)
            await server_session.send_command(SendPacket(packet[::-1]))
            await server_session.send_command(Consensus(0, b"document"))
            assert await session.recv_command() == SendPacket(packet[::-1])
            assert await session.recv_command() == Consensus(0, b"document")
            await session.send_command(Disconnect())
            assert isinstance(await server_session.recv_command(), Disconnect)
            await server_session.close("peer sent Disconnect")
            with pytest.raises(ConnectionClosed, match="peer closed the connection"):
                await session.recv_command()
            assert session.closed and session.close_reason == "peer closed the connection"
            with pytest.raises(ConnectionClosed, match="send on closed session"):
                await session.send_command(NoOp())
            await session.close()  # idempotent
    run(scenario)


def test_can_send_and_async_authenticators():
    async def scenario():
        async def async_no_send(creds):
            await asyncio.sleep(0)
            return True, False
        async with Listener(authenticator=async_no_send) as listener:
            session, server_session = await listener.connect_pair(b"")
            assert server_session.can_send is False and session.can_send is True
            await session.close()
            await server_session.close()
    run(scenario)


def test_concurrent_senders_keep_frames_intact():
    async def scenario():
        async with Listener() as listener:
            session, server_session = await listener.connect_pair(b"x")

            async def sender(tag: int):
                for index in range(20):
                    await session.send_command(SendPacket(bytes([tag, index]) * 1000))
            await asyncio.gather(*(sender(tag) for tag in range(5)))
            received = [await server_session.recv_command() for _ in range(100)]
            assert sorted(c.sphinx_packet[:2] for c in received) == sorted(
                bytes([tag, index]) for tag in range(5) for index in range(20))
            await session.close()
            await server_session.close()
    run(scenario)


def test_go_transcript_on_the_wire_as_initiator():
    """Our connect() with the transcript's randomness emits msg1, msg3 and the two SendPacket
    frames byte for byte to a peer replaying the Go responder's msg2, NoOp and Disconnect."""
    t = load_transcript()
    frames = [bytes.fromhex(f["wire_bytes"]) for f in t["frames"]]

    async def scenario():
        checks = asyncio.Queue()

        async def go_responder(reader, writer):
            try:
                await checks.put(("msg1", (await reader.readexactly(MSG1_LENGTH)).hex() == t["msg1"]))
                writer.write(bytes.fromhex(t["msg2"]))
                await checks.put(("msg3", (await reader.readexactly(MSG3_LENGTH)).hex() == t["msg3"]))
                writer.write(frames[0])
                await checks.put(("frame1", await reader.readexactly(len(frames[1])) == frames[1]))
                await checks.put(("frame2", await reader.readexactly(len(frames[2])) == frames[2]))
                writer.write(frames[3])
                await writer.drain()
                await reader.read()
            finally:
                writer.close()

        server = await asyncio.start_server(go_responder, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        session = await connect(LOOPBACK, port,
                                link_key=bytes.fromhex(t["initiator_static_private"]),
                                additional_data=bytes.fromhex(t["initiator_ad"]),
                                authenticator=allow, handshake_timeout=10, kem=KyberPyKyber1024(),
                                rng=ShakeStream(INITIATOR_LABEL),
                                clock=lambda: t["responder_unix_time"])
        assert session.handshake_hash.hex() == t["handshake_hash"]
        assert session.peer_credentials.public_key.hex() == t["responder_static_public"]
        assert session.clock_skew == 0
        await session.send_command(SendPacket(b"hello"))
        await session.send_command(SendPacket(b"world"))
        assert isinstance(await session.recv_command(), Disconnect)
        await session.close()
        results = [await checks.get() for _ in range(4)]
        assert results == [("msg1", True), ("msg3", True), ("frame1", True), ("frame2", True)]
        server.close()
        await server.wait_closed()
    run(scenario)


def test_go_transcript_on_the_wire_as_responder():
    t = load_transcript()
    frames = [bytes.fromhex(f["wire_bytes"]) for f in t["frames"]]

    async def scenario():
        options = dict(link_key=bytes.fromhex(t["responder_static_private"]),
                       additional_data=bytes.fromhex(t["responder_ad"]), kem=KyberPyKyber1024(),
                       rng=ShakeStream(RESPONDER_LABEL),
                       clock=lambda: t["responder_unix_time"])
        async with Listener(**options) as listener:
            reader, writer = await asyncio.open_connection(LOOPBACK, listener.port)
            writer.write(bytes.fromhex(t["msg1"]))
            assert (await reader.readexactly(MSG2_LENGTH)).hex() == t["msg2"]
            writer.write(bytes.fromhex(t["msg3"]))
            assert await reader.readexactly(len(frames[0])) == frames[0]  # the NoOp finalisation
            session = await listener.sessions.get()
            assert session.peer_credentials.additional_data.hex() == t["initiator_ad"]
            writer.write(frames[1] + frames[2])
            assert await session.recv_command() == SendPacket(b"hello")
            assert await session.recv_command() == SendPacket(b"world")
            await session.send_command(Disconnect())
            assert await reader.readexactly(len(frames[3])) == frames[3]
            await session.close()
            writer.close()
            await writer.wait_closed()
    run(scenario)


# -- authentication --------------------------------------------------------------------------

def test_initiator_rejecting_the_responder_sends_no_msg3(caplog):
    caplog.set_level(logging.INFO, logger="katzenpost.wire")

    async def scenario():
        async with Listener() as listener:
            with pytest.raises(AuthenticationError, match="peer authentication failed"):
                await connect(LOOPBACK, listener.port, link_key=os.urandom(32), additional_data=b"",
                              authenticator=lambda c: False, handshake_timeout=5)
            server_result = await listener.sessions.get()
            assert isinstance(server_result, HandshakeError)
            assert "closed the connection during the handshake (0 of 324 bytes)" in str(server_result)
    run(scenario)
    assert "initiator handshake failed: peer authentication failed" in caplog.text


@pytest.mark.parametrize("verdict", ["false", "tuple", "raises"])
def test_responder_rejecting_the_initiator_sends_nothing(verdict, caplog):
    caplog.set_level(logging.INFO, logger="katzenpost.wire")

    def authenticator(creds):
        if verdict == "raises":
            raise KeyError("user database unavailable")
        return False if verdict == "false" else (False, True)

    async def scenario():
        async with Listener(authenticator=authenticator) as listener:
            raw = await RawInitiator().open(listener.port, finish=False)
            raw.writer.write(raw.handshake.write_message())
            raw.handshake.read_message(await raw.reader.readexactly(MSG2_LENGTH))
            raw.writer.write(raw.handshake.write_message())
            assert await raw.expect_closed() == b""  # no NoOp, no error reply
            assert isinstance(await listener.sessions.get(), AuthenticationError)
    run(scenario)
    assert "responder handshake failed" in caplog.text
    if verdict == "raises":
        assert "peer authenticator raised KeyError" in caplog.text


def test_initiator_sees_a_rejection_as_a_handshake_error():
    async def scenario():
        async with Listener(authenticator=lambda c: False) as listener:
            with pytest.raises(HandshakeError, match="closed the connection"):
                await connect(LOOPBACK, listener.port, link_key=os.urandom(32), additional_data=b"",
                              authenticator=allow, handshake_timeout=5)
            assert isinstance(await listener.sessions.get(), AuthenticationError)
    run(scenario)


# -- handshake bad input ---------------------------------------------------------------------

@pytest.mark.parametrize("version", [0x00, 0x01, 0x03])
def test_wrong_prologue_closes_without_a_reply(version, caplog):
    caplog.set_level(logging.INFO, logger="katzenpost.wire")

    async def scenario():
        async with Listener() as listener:
            raw = await RawInitiator().open(listener.port, finish=False)
            raw.writer.write(bytes([version]) + raw.handshake.write_message()[1:])
            assert await raw.expect_closed() == b""
            result = await listener.sessions.get()
            assert isinstance(result, HandshakeError)
            assert f"unsupported protocol version 0x{version:02x}" in str(result)
    run(scenario)
    assert "unsupported protocol version" in caplog.text


MALFORMED_STAGE_REASONS = {
    "truncated msg1": "closed the connection during the handshake (900 of 1601 bytes)",
    "garbage msg1": "public key rejected",  # random bytes are not a canonical Kyber key
    "truncated msg3": "closed the connection during the handshake (100 of 324 bytes)",
    "bad msg3 MAC": "handshake message 3: authentication tag mismatch",
}


@pytest.mark.parametrize("stage", list(MALFORMED_STAGE_REASONS))
def test_malformed_handshake_messages_close_the_connection(stage, caplog):
    caplog.set_level(logging.INFO, logger="katzenpost.wire")

    async def scenario():
        async with Listener() as listener:
            raw = await RawInitiator().open(listener.port, finish=False)
            msg1 = raw.handshake.write_message()
            if stage == "truncated msg1":
                raw.writer.write(msg1[:900])
                raw.writer.write_eof()
            elif stage == "garbage msg1":
                raw.writer.write(b"\x02" + os.urandom(MSG1_LENGTH - 1))
            else:
                raw.writer.write(msg1)
                raw.handshake.read_message(await raw.reader.readexactly(MSG2_LENGTH))
                msg3 = raw.handshake.write_message()
                if stage == "truncated msg3":
                    raw.writer.write(msg3[:100])
                    raw.writer.write_eof()
                else:
                    raw.writer.write(msg3[:-1] + bytes([msg3[-1] ^ 0x80]))
            assert await raw.expect_closed() == b""  # no msg2 / no NoOp, no error reply
            result = await listener.sessions.get()
            assert isinstance(result, HandshakeError), result
            assert MALFORMED_STAGE_REASONS[stage] in str(result)
    run(scenario)
    assert MALFORMED_STAGE_REASONS[stage] in caplog.text


def test_stalling_initiator_hits_the_handshake_timeout(caplog):
    caplog.set_level(logging.INFO, logger="katzenpost.wire")

    async def scenario():
        async with Listener(handshake_timeout=0.3) as listener:
            raw = await RawInitiator().open(listener.port, finish=False)
            raw.writer.write(raw.handshake.write_message()[:500])  # then nothing
            assert await raw.expect_closed() == b""
            assert isinstance(await listener.sessions.get(), HandshakeTimeout)
    run(scenario)
    assert "did not finish within 0.3 s" in caplog.text


@pytest.mark.parametrize("stall_after", ["nothing", "msg2"])
def test_stalling_responder_hits_the_handshake_timeout(stall_after):
    async def scenario():
        async def stalling_responder(reader, writer):
            handshake = Handshake(initiator=False, link_key=os.urandom(32), additional_data=b"")
            try:
                handshake.read_message(await reader.readexactly(MSG1_LENGTH))
                if stall_after == "msg2":
                    writer.write(handshake.write_message())
                await reader.read()  # until the initiator gives up
            finally:
                writer.close()
        server = await asyncio.start_server(stalling_responder, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(HandshakeTimeout):
            await connect(LOOPBACK, port, link_key=os.urandom(32), additional_data=b"",
                          authenticator=allow, handshake_timeout=0.3)
        server.close()
        await server.wait_closed()
    run(scenario)


@pytest.mark.parametrize("first_frame", [SendPacket(b"early"), Disconnect()])
def test_initiator_requires_noop_as_the_first_frame(first_frame):
    async def scenario():
        async def impatient_responder(reader, writer):
            handshake = Handshake(initiator=False, link_key=os.urandom(32), additional_data=b"")
            try:
                handshake.read_message(await reader.readexactly(MSG1_LENGTH))
                writer.write(handshake.write_message())
                handshake.read_message(await reader.readexactly(MSG3_LENGTH))
                writer.write(FrameSealer(handshake.split()[0]).seal(first_frame.to_bytes()))
                await reader.read()
            finally:
                writer.close()
        server = await asyncio.start_server(impatient_responder, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(HandshakeError, match=f"expected NoOp .* got {type(first_frame).__name__}"):
            await connect(LOOPBACK, port, link_key=os.urandom(32), additional_data=b"",
                          authenticator=allow, handshake_timeout=5)
        server.close()
        await server.wait_closed()
    run(scenario)


def test_oversized_additional_data_is_refused_before_any_io():
    async def scenario():
        with pytest.raises(ValueError, match="additional_data is 256 bytes"):
            await connect(LOOPBACK, 1, link_key=os.urandom(32), additional_data=bytes(256),
                          authenticator=allow, handshake_timeout=1)
        async with Listener(additional_data=bytes(300)) as listener:
            reader, writer = await asyncio.open_connection(LOOPBACK, listener.port)
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await writer.wait_closed()
    run(scenario)


def test_connect_to_a_closed_port_is_a_connect_error():
    async def scenario():
        server = await asyncio.start_server(lambda r, w: None, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectError, match=f"connecting to 127.0.0.1:{port} failed"):
            await connect(LOOPBACK, port, link_key=os.urandom(32), additional_data=b"",
                          authenticator=allow, handshake_timeout=1)
    run(scenario)


# -- transport bad input ---------------------------------------------------------------------

BAD_FRAMES = {  # name -> (bytes to send, half-close after?, error type, reason)
    "random header": (lambda raw: os.urandom(20), False, FrameError, "frame header authentication failed"),
    "oversized length": (lambda raw: raw.forged_header(1048577), False, FrameError,
                         "frame length 1048577 outside"),
    "length below tag": (lambda raw: raw.forged_header(15), False, FrameError, "frame length 15 outside"),
    "truncated body": (lambda raw: raw.seal(SendPacket(bytes(100)).to_bytes())[:60], True, FrameError,
                       "truncated frame body (40 of 122 bytes)"),
    "truncated header": (lambda raw: b"\x00" * 7, True, FrameError, "truncated frame header (7 of 20 bytes)"),
    "bad body MAC": (lambda raw: _flip_last(raw.seal(NoOp().to_bytes())), False, FrameError,
                     "frame body authentication failed"),
    "unknown command": (lambda raw: raw.seal(b"\x63\x00\x00\x00\x00\x00"), False, CommandError,
                        "unknown command id 99"),
    "reserved byte": (lambda raw: raw.seal(b"\x02\x01\x00\x00\x00\x00"), False, CommandError,
                      "reserved byte 0x01"),
    "non-zero padding": (lambda raw: raw.seal(b"\x00\x00\x00\x00\x00\x00\x00\x05"), False, CommandError,
                         "non-zero padding"),
    "short command": (lambda raw: raw.seal(b"\x02\x00"), False, CommandError,
                      "shorter than the 6-byte header"),
}


def _flip_last(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 1])


@pytest.mark.parametrize("name", list(BAD_FRAMES))
def test_bad_frame_closes_the_session_with_a_logged_reason(name, caplog):
    caplog.set_level(logging.INFO, logger="katzenpost.wire")

    async def scenario():
        async with Listener() as listener:
            listener.recv_loop = True
            raw = await RawInitiator().open(listener.port)
            session = await listener.sessions.get()
            raw.writer.write(raw.seal(SendPacket(b"fine").to_bytes()))
            assert await listener.received.get() == SendPacket(b"fine")
            make_data, half_close, error_type, reason = BAD_FRAMES[name]
            raw.writer.write(make_data(raw))
            if half_close:
                raw.writer.write_eof()
            result = await listener.received.get()
            assert type(result) is error_type, result
            assert reason in str(result)
            assert session.closed and reason in session.close_reason
            assert await raw.expect_closed() == b""  # never an error reply
    run(scenario)
    assert "closed: " in caplog.text


def test_receive_timeout_closes_the_session():
    async def scenario():
        async with Listener() as listener:
            raw = await RawInitiator().open(listener.port)
            session = await listener.sessions.get()
            with pytest.raises(WireTimeout, match="no command within 0.2 s"):
                await session.recv_command(timeout=0.2)
            assert session.closed
            assert await raw.expect_closed() == b""
    run(scenario)


def test_write_timeout_closes_a_session_whose_peer_stops_reading():
    async def scenario():
        async with Listener() as listener:
            raw = await RawInitiator().open(listener.port)
            session = await listener.sessions.get()
            session.write_timeout = 0.3
            with pytest.raises(WireTimeout, match="write stalled"):
                for _ in range(10000):  # the raw peer never reads: buffers fill up
                    await session.send_command(SendPacket(bytes(60000)))
            assert session.closed
            raw.writer.transport.abort()
    run(scenario)


def test_close_while_a_receiver_waits_ends_it_with_connection_closed():
    async def scenario():
        async with Listener() as listener:
            raw = await RawInitiator().open(listener.port)
            session = await listener.sessions.get()
            waiter = asyncio.ensure_future(session.recv_command())
            await asyncio.sleep(0.05)
            await session.close("shutting down")
            with pytest.raises(ConnectionClosed, match="shutting down"):
                await waiter
            assert await raw.expect_closed() == b""
    run(scenario)


def test_many_sessions_leave_nothing_behind():
    async def scenario():
        async with Listener() as listener:
            for _ in range(10):
                session, server_session = await listener.connect_pair(b"")
                await session.send_command(Disconnect())
                assert isinstance(await server_session.recv_command(), Disconnect)
                await server_session.close()
                await session.close()
    run(scenario)


def test_cancelling_a_receive_mid_frame_closes_the_session():
    async def scenario():
        async with Listener() as listener:
            raw = await RawInitiator().open(listener.port)
            session = await listener.sessions.get()
            frame = raw.seal(SendPacket(bytes(500)).to_bytes())
            raw.writer.write(frame[:100])  # header and part of the body
            receiver = asyncio.ensure_future(session.recv_command())
            await asyncio.sleep(0.1)
            receiver.cancel()
            with pytest.raises(asyncio.CancelledError):
                await receiver
            assert session.closed and "cancelled in the middle of a frame" in session.close_reason
            with pytest.raises(ConnectionClosed):
                await session.recv_command()
            assert await raw.expect_closed() == b""
    run(scenario)


def test_cancelling_a_receive_between_frames_keeps_the_session():
    async def scenario():
        async with Listener() as listener:
            raw = await RawInitiator().open(listener.port)
            session = await listener.sessions.get()
            receiver = asyncio.ensure_future(session.recv_command())
            await asyncio.sleep(0.05)
            receiver.cancel()
            with pytest.raises(asyncio.CancelledError):
                await receiver
            assert not session.closed
            raw.writer.write(raw.seal(SendPacket(b"after").to_bytes()))
            assert await session.recv_command() == SendPacket(b"after")
            await session.close()
            assert await raw.expect_closed() == b""
    run(scenario)


@pytest.mark.parametrize("oracle_side", ["responder", "initiator"])
def test_adapter_interoperates_with_the_round3_oracle_over_tcp(oracle_side):
    """ML-KEM adapter on one side, kyber-py round 3 on the other, in both roles."""
    async def scenario():
        listener_options = {"kem": KyberPyKyber1024()} if oracle_side == "responder" else {}
        client_kem = KyberPyKyber1024() if oracle_side == "initiator" else None
        async with Listener(**listener_options) as listener:
            session, server_session = await listener.connect_pair(b"mixed", handshake_timeout=10,
                                                                  kem=client_kem)
            await server_session.send_command(SendPacket(b"round three"))
            assert await session.recv_command() == SendPacket(b"round three")
            await session.close()
            await server_session.close()
    run(scenario)


@pytest.mark.parametrize("fault", ["bad msg2 MAC", "truncated msg2", "garbage msg2"])
def test_malformed_msg2_fails_the_initiator_without_msg3(fault):
    async def scenario():
        outcome = asyncio.Queue()

        async def faulty_responder(reader, writer):
            handshake = Handshake(initiator=False, link_key=os.urandom(32), additional_data=b"")
            try:
                handshake.read_message(await reader.readexactly(MSG1_LENGTH))
                msg2 = handshake.write_message()
                if fault == "bad msg2 MAC":
                    writer.write(msg2[:-1] + bytes([msg2[-1] ^ 0x01]))
                elif fault == "truncated msg2":
                    writer.write(msg2[:1000])
                    writer.write_eof()
                else:
                    writer.write(os.urandom(MSG2_LENGTH))
                await outcome.put(await asyncio.wait_for(reader.read(), 5))
            finally:
                writer.close()
        server = await asyncio.start_server(faulty_responder, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(HandshakeError):
            await connect(LOOPBACK, port, link_key=os.urandom(32), additional_data=b"",
                          authenticator=allow, handshake_timeout=5)
        assert await outcome.get() == b""  # the initiator never sent msg3
        server.close()
        await server.wait_closed()
    run(scenario)


def test_bounded_fuzz_of_post_handshake_bytes():
    """Random bytes (and random valid-looking frames with random bodies) after the handshake:
    the receiving session ends with a WireError and closes; nothing else escapes."""
    import random
    rng = random.Random(0xC0FFEE)

    async def scenario():
        async with Listener() as listener:
            listener.recv_loop = True
            for trial in range(12):
                raw = await RawInitiator().open(listener.port)
                session = await listener.sessions.get()
                if trial % 3 == 0:
                    junk = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200)))
                elif trial % 3 == 1:  # authentic frame, random command bytes
                    junk = raw.seal(bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64))))
                else:  # authentic frame followed by a junk tail
                    junk = raw.seal(NoOp().to_bytes()) + os.urandom(rng.randrange(1, 40))
                raw.writer.write(junk)
                raw.writer.write_eof()
                while True:
                    item = await listener.received.get()
                    if isinstance(item, WireError):
                        break
                    assert not isinstance(item, tuple), item  # ("escaped", exc)
                assert session.closed
                await raw.expect_closed()
    run(scenario)


def test_write_packets_sends_a_batch_without_waiting():
    import numpy as np

    async def scenario():
        async with Listener() as listener:
            session, server_session = await listener.connect_pair(b"mix")
            batch = np.random.default_rng(1).integers(0, 256, size=(8, PACKET_LENGTH), dtype=np.uint8)
            assert session.is_writable()
            session.write_packets(batch)
            session.write_packets([b"tail"])
            await session.wait_writable()
            for row in batch:
                assert await server_session.recv_command() == SendPacket(row.tobytes())
            assert await server_session.recv_command() == SendPacket(b"tail")
            await server_session.close()
            with pytest.raises(ConnectionClosed):
                await session.recv_command()
            assert not session.is_writable()
            with pytest.raises(ConnectionClosed):
                session.write_packets([b"late"])
            with pytest.raises(ConnectionClosed):
                await session.wait_writable()
    run(scenario)


def test_is_writable_reports_back_pressure():
    async def scenario():
        async with Listener() as listener:
            raw = await RawInitiator().open(listener.port)
            session = await listener.sessions.get()
            rounds = 0
            while session.is_writable() and rounds < 10000:  # the raw peer never reads
                session.write_packets([bytes(PACKET_LENGTH)] * 16)
                await asyncio.sleep(0)
                rounds += 1
            assert not session.is_writable() and rounds < 10000
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(session.wait_writable(), 0.2)
            await session.close(abort=True)
            raw.writer.transport.abort()
    run(scenario)


# -- session API contract details ------------------------------------------------------------

class CountingAuthenticator:
    """The object form of the authenticator (``is_peer_valid``), as the PKI layer uses it."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.seen = []

    def is_peer_valid(self, creds):
        self.seen.append(creds)
        return self.answer


@pytest.mark.parametrize("answer, accepted, can_send", [
    (True, True, True), ((True, False), True, False), ((False, True), False, False),
    ((True, True, True), False, False),  # a malformed answer rejects, it never escapes
])
def test_authenticator_object_and_its_answers(answer, accepted, can_send):
    async def scenario():
        authenticator = CountingAuthenticator(answer)
        async with Listener(authenticator=authenticator) as listener:
            client_key = os.urandom(32)
            if accepted:
                session = await connect(LOOPBACK, listener.port, link_key=client_key,
                                        additional_data=b"obj", authenticator=allow,
                                        handshake_timeout=5)
                server_session = await listener.sessions.get()
                assert server_session.can_send is can_send
                await session.close()
                await server_session.close()
            else:
                with pytest.raises(HandshakeError, match="closed the connection"):
                    await connect(LOOPBACK, listener.port, link_key=client_key,
                                  additional_data=b"obj", authenticator=allow, handshake_timeout=5)
                assert isinstance(await listener.sessions.get(), AuthenticationError)
            client_public = Handshake(initiator=True, link_key=client_key,
                                      additional_data=b"")._static_public
            assert authenticator.seen == [PeerCredentials(b"obj", client_public)]
    run(scenario)


def test_concurrent_receives_on_one_session_are_refused():
    async def scenario():
        async with Listener() as listener:
            raw = await RawInitiator().open(listener.port)
            session = await listener.sessions.get()
            first = asyncio.ensure_future(session.recv_command())
            await asyncio.sleep(0.05)
            with pytest.raises(RuntimeError, match="called concurrently"):
                await session.recv_command()
            raw.writer.write(raw.seal(NoOp().to_bytes()))
            assert await first == NoOp()  # the refused call did not disturb the first one
            await session.close()
            assert await raw.expect_closed() == b""
    run(scenario)


def test_tcp_keepalive_is_enabled_on_both_sides():
    import socket as socket_module

    def keepalive(session):
        sock = session._writer.get_extra_info("socket")
        enabled = sock.getsockopt(socket_module.SOL_SOCKET, socket_module.SO_KEEPALIVE)
        idle = sock.getsockopt(socket_module.IPPROTO_TCP, socket_module.TCP_KEEPIDLE)
        return bool(enabled), idle

    async def scenario():
        async with Listener() as listener:
            session, server_session = await listener.connect_pair(b"")
            assert keepalive(session) == keepalive(server_session) == (True, 180)
            await session.close()
            await server_session.close()
    run(scenario)


def test_oversized_command_is_refused_and_the_session_stays_usable():
    from katzenpost.wire.framing import MAX_COMMAND_LENGTH

    async def scenario():
        async with Listener() as listener:
            session, server_session = await listener.connect_pair(b"")
            largest = SendPacket(bytes(MAX_COMMAND_LENGTH - 6))
            with pytest.raises(FrameError, match="exceeds the 1048560-byte frame limit"):
                await session.send_command(SendPacket(bytes(MAX_COMMAND_LENGTH - 5)))
            assert not session.closed
            await session.send_command(largest)  # exactly the limit still goes through
            assert await server_session.recv_command() == largest
            await session.close()
            await server_session.close()
    run(scenario)


def test_write_packets_on_a_dead_transport_closes_the_session():
    async def scenario():
        async with Listener() as listener:
            session, server_session = await listener.connect_pair(b"")
            session._writer.transport.abort()  # the connection is gone under the sender
            await asyncio.sleep(0)
            with pytest.raises(ConnectionClosed, match="transport closed under the sender"):
                session.write_packets([bytes(PACKET_LENGTH)])
            assert session.closed and not session.is_writable()
            with pytest.raises(ConnectionClosed):
                await server_session.recv_command()
    run(scenario)


def test_graceful_close_of_a_peer_that_stopped_reading_is_bounded(monkeypatch):
    from katzenpost.wire import session as wire_session
    monkeypatch.setattr(wire_session, "CLOSE_FLUSH_TIMEOUT", 0.3)

    async def scenario():
        async with Listener() as listener:
            raw = await RawInitiator().open(listener.port)
            session = await listener.sessions.get()
            while session.is_writable():  # the raw peer never reads: fill every buffer
                session.write_packets([bytes(PACKET_LENGTH)] * 64)
                await asyncio.sleep(0)
            loop = asyncio.get_running_loop()
            started = loop.time()
            await session.close("shutting down")  # flush attempt, then abort
            assert loop.time() - started < 2.0
            assert session._writer.transport.is_closing()
            raw.writer.transport.abort()
    run(scenario)


@pytest.mark.parametrize("role", ["initiator", "responder"])
def test_cancelling_a_handshake_closes_the_socket(role):
    """A caller that gives up (task cancelled) mid-handshake leaves no socket behind and the
    peer sees the connection end."""
    async def scenario():
        peer_saw = asyncio.Queue()
        handshakes: asyncio.Queue = asyncio.Queue()

        async def silent_peer(reader, writer):  # reads what comes, never answers
            try:
                await peer_saw.put(await asyncio.wait_for(reader.read(), 5))
            finally:
                writer.close()

        async def our_responder(reader, writer):
            task = asyncio.ensure_future(accept(reader, writer, link_key=os.urandom(32),
                                                additional_data=b"", authenticator=allow,
                                                handshake_timeout=10))
            await handshakes.put(task)
            with contextlib.suppress(asyncio.CancelledError):
                await task

        server = await asyncio.start_server(
            silent_peer if role == "initiator" else our_responder, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        if role == "initiator":
            task = asyncio.ensure_future(connect(LOOPBACK, port, link_key=os.urandom(32),
                                                 additional_data=b"", authenticator=allow,
                                                 handshake_timeout=10))
            await asyncio.sleep(0.2)  # msg1 is out; waiting for msg2
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert len(await peer_saw.get()) == MSG1_LENGTH  # then EOF: the socket closed
        else:
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            task = await handshakes.get()
            await asyncio.sleep(0.1)  # accept() waits for msg1
            task.cancel()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()
    run(scenario)


def test_a_refused_packet_mid_batch_keeps_the_stream_in_step():
    """Packets sealed before the refused one are still sent: the peer's counters stay in step."""
    from katzenpost.wire.framing import MAX_COMMAND_LENGTH

    async def scenario():
        async with Listener() as listener:
            session, server_session = await listener.connect_pair(b"")
            with pytest.raises(FrameError, match="frame limit"):
                session.write_packets([b"first", bytes(MAX_COMMAND_LENGTH), b"never"])
            assert not session.closed
            await session.send_command(SendPacket(b"after"))
            assert await server_session.recv_command() == SendPacket(b"first")
            assert await server_session.recv_command() == SendPacket(b"after")
            await session.close()
            await server_session.close()
    run(scenario)


def test_a_cancel_that_lands_as_a_frame_arrives_is_never_swallowed():
    """A receive with a timeout that is cancelled just as its frame completes must end
    cancelled (a stopped PKI worker would otherwise keep running and hang the node's halt);
    every interleaving of the loop's steps between the frame and the cancel is tried."""
    async def scenario():
        async with Listener() as listener:
            raw = await RawInitiator().open(listener.port)
            session = await listener.sessions.get()
            for steps in range(6):
                gate = asyncio.get_running_loop().create_future()

                async def next_frame():
                    return await gate
                session._recv_frame = next_frame
                receiver = asyncio.ensure_future(session.recv_command(timeout=5))
                await asyncio.sleep(0)
                gate.set_result(NoOp())
                for _ in range(steps):
                    await asyncio.sleep(0)
                if receiver.done():
                    assert receiver.result() == NoOp()
                    continue
                receiver.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await receiver
            await session.close()
            assert await raw.expect_closed() == b""
    run(scenario)
