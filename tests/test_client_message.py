"""Client messages through the real unwrap: payload layout, a message with its SURB-ACK round
trip, a Kaetzchen request and reply, an unreliable message, reply matching, loss accounting."""
import random

import pytest

from _pki_fixtures import make_document
from client_support import walk
from katzenpost import sphinx
from katzenpost.client import message
from katzenpost.client.message import KIND_ACK, KIND_REPLY, MessageError, ReplyBook
from katzenpost.pki.epochtime import EpochClock
from katzenpost.sphinx import NodeDelay, Recipient, SURBReply, geometry

CLOCK = EpochClock()
EPOCH = 300_000
NOW = CLOCK.epoch_start(EPOCH) + 60.0
SURB_LEN = geometry.SURB_LENGTH


@pytest.fixture(scope="module")
def doc():
    return make_document(EPOCH, NOW)


def commands(unwrapped):
    return {type(c): c for c in unwrapped.commands}


def test_plaintext_block_layout():
    surb = bytes(range(256)) * 2 + bytes(44)
    block = message.plaintext_block(b"hello", surb)
    assert len(block) == geometry.FORWARD_PAYLOAD_LENGTH
    assert block[:2] == b"\x01\x00" and block[2:2 + SURB_LEN] == surb
    assert block[2 + SURB_LEN:].rstrip(b"\x00") == b"hello"
    bare = message.plaintext_block(b"x" * geometry.USER_FORWARD_PAYLOAD_LENGTH)
    assert bare[:2 + SURB_LEN] == bytes(2 + SURB_LEN) and bare[2 + SURB_LEN:] == b"x" * 1490
    with pytest.raises(MessageError, match="at most 1490"):
        message.plaintext_block(b"x" * 1491)
    with pytest.raises(MessageError, match="SURB of 555"):
        message.plaintext_block(b"", surb[:555])
    assert message.reply_body(b"\x01\x00pong") == b"pong"
    with pytest.raises(MessageError):
        message.reply_body(b"\x01")


def test_message_and_its_surb_ack_round_trip(doc):
    p1, p2 = doc.providers
    out = message.new_message(doc, src_provider=p1, dst_provider=p2, recipient="bob", reply_to="alice",
                              body=b"hi bob", start=NOW, rng=random.Random(1))
    assert len(out.packet) == geometry.PACKET_LENGTH and out.first_hop == p1.identity_key
    terminal = walk(out.packet, out.forward)
    cmds = commands(terminal)
    assert set(cmds) == {NodeDelay, Recipient}
    assert cmds[Recipient].id == b"bob".ljust(64, b"\x00")
    assert cmds[NodeDelay].delay == out.forward.delays_ms[-1] >= 1
    payload = terminal.payload
    assert payload[:2] == b"\x01\x00" and payload[2 + SURB_LEN:].rstrip(b"\x00") == b"hi bob"

    # The far provider's SURB-ACK: 2048 zero bytes under the SURB, sent to the SURB's first hop.
    ack, first_hop = sphinx.new_packet_from_surb(payload[2:2 + SURB_LEN], bytes(2048))
    assert first_hop == out.reply.hops[0].id == doc.topology[0][0].identity_key
    back = walk(ack, out.reply)
    cmds = commands(back)
    assert set(cmds) == {Recipient, SURBReply}
    assert cmds[Recipient].id == b"alice".ljust(64, b"\x00")
    assert cmds[SURBReply].id == out.surb.surb_id
    assert len(back.payload) == geometry.SPRP_PAYLOAD_LENGTH

    book = ReplyBook()
    book.add(out.surb)
    assert out.surb.kind == KIND_ACK
    assert out.surb.eta == pytest.approx(NOW + (out.forward.total_delay_ms + out.reply.total_delay_ms) / 1000)
    reply = book.open(cmds[SURBReply].id, back.payload)
    assert reply.context is out.surb and reply.plaintext == bytes(2048)
    assert book.delivered == 1 and len(book) == 0
    assert book.open(cmds[SURBReply].id, back.payload) is None        # a SURB answers once


def test_kaetzchen_request_and_reply(doc):
    p1, p2 = doc.providers
    endpoint = message.kaetzchen_endpoint(p2, "loop")
    out = message.new_kaetzchen_request(doc, src_provider=p1, service_provider=p2, endpoint=endpoint,
                                        reply_to="alice", body=b'{"q":1}', start=NOW, rng=random.Random(2))
    terminal = walk(out.packet, out.forward)
    assert commands(terminal)[Recipient].id == b"+loop".ljust(64, b"\x00")
    surb = terminal.payload[2:2 + SURB_LEN]
    response = b"\x01\x00" + b"pong" + bytes(2042)
    reply_packet, _ = sphinx.new_packet_from_surb(surb, response)
    back = walk(reply_packet, out.reply)
    book = ReplyBook()
    book.add(out.surb)
    reply = book.open(out.surb.surb_id, back.payload)
    assert reply.context.kind == KIND_REPLY and reply.body.rstrip(b"\x00") == b"pong"
    with pytest.raises(MessageError, match="no 'echo' endpoint"):
        message.kaetzchen_endpoint(p2, "echo")


def test_unreliable_message_has_no_surb_and_no_terminal_delay(doc):
    p1, p2 = doc.providers
    out = message.new_unreliable_message(doc, src_provider=p1, dst_provider=p2, recipient="bob",
                                         body=b"fire and forget", start=NOW, rng=random.Random(3))
    assert out.surb is None and out.reply is None
    terminal = walk(out.packet, out.forward)
    assert set(commands(terminal)) == {Recipient}
    assert terminal.payload[:2 + SURB_LEN] == bytes(2 + SURB_LEN)


def test_reply_book_rejects_unknown_tampered_and_duplicate(doc):
    p1, p2 = doc.providers
    out = message.new_message(doc, src_provider=p1, dst_provider=p2, recipient="bob", reply_to="alice",
                              body=b"", start=NOW, rng=random.Random(4), surb_id=b"S" * 16)
    assert out.surb.surb_id == b"S" * 16 and "keys" not in repr(out.surb)
    terminal = walk(out.packet, out.forward)
    ack, _ = sphinx.new_packet_from_surb(terminal.payload[2:2 + SURB_LEN], bytes(2048))
    payload = bytearray(walk(ack, out.reply).payload)
    book = ReplyBook()
    book.add(out.surb)
    with pytest.raises(MessageError, match="already pending"):
        book.add(out.surb)
    assert book.open(b"T" * 16, payload) is None and len(book) == 1       # unknown: nothing consumed
    payload[100] ^= 1
    assert book.open(b"S" * 16, bytes(payload)) is None                  # tampered: consumed, counted
    assert book.failed == 1 and len(book) == 0
    assert book.open(b"S" * 16, b"short") is None
    with pytest.raises(MessageError, match="SURB ID of 3"):
        message.new_message(doc, src_provider=p1, dst_provider=p2, recipient="b", reply_to="a", body=b"",
                            start=NOW, surb_id=b"abc")


def test_reply_book_expires_overdue_surbs_only(doc):
    book = ReplyBook()
    contexts = [message.SURBContext(surb_id=bytes([i]) * 16, keys=bytes(64), kind=KIND_ACK, eta=100.0 + i,
                                    sent_at=0.0) for i in range(200)]
    for context in contexts:
        book.add(context)
    for context in contexts[:150]:                   # answered: their heap entries linger
        book._pending.pop(context.surb_id)
    assert book.expire(now=260.0, slack=15.0) == []
    lost = book.expire(now=270.0, slack=15.0)
    assert [c.surb_id[0] for c in lost] == list(range(150, 155))
    assert book.lost == 5 and len(book) == 45
    assert book.pending(bytes([160]) * 16) is contexts[160]
    assert len(book.expire(now=1e9)) == 45 and len(book) == 0


def test_a_batch_of_messages_and_requests_each_round_trip(doc):
    """new_messages / new_round_trips: every packet of a batch (more than one lane group, mixed
    kinds and start times) reaches its recipient with its own body, and its SURB-ACK or reply
    decrypts under its own keys only."""
    p1, p2 = doc.providers
    bodies = [f"batch {i}".encode() for i in range(11)]
    starts = [NOW + i * 0.25 for i in range(11)]
    outs = message.new_messages(doc, src_provider=p1, dst_provider=p2, recipient="bob", reply_to="alice",
                                bodies=bodies, starts=starts, rng=random.Random(7))
    outs += message.new_round_trips(doc, src_provider=p1, reply_to="alice", rng=random.Random(8), trips=[
        message.RoundTrip(p2, "+echo", b"req", NOW, KIND_REPLY), message.RoundTrip(p2, "carol", b"c", NOW + 1)])
    assert len({o.packet for o in outs}) == len({o.surb.surb_id for o in outs}) == 13
    book = ReplyBook()
    for out in outs:
        book.add(out.surb)
    for i, out in enumerate(outs):
        terminal = walk(out.packet, out.forward)
        cmds = commands(terminal)
        recipient = ["bob"] * 11 + ["+echo", "carol"]
        assert cmds[Recipient].id == recipient[i].encode().ljust(64, b"\x00")
        expected = (bodies + [b"req", b"c"])[i]
        assert terminal.payload[2 + SURB_LEN:].rstrip(b"\x00") == expected
        assert out.surb.kind == (KIND_REPLY if i == 11 else KIND_ACK)
        assert out.surb.sent_at == ([*starts, NOW, NOW + 1])[i]
        reply, _ = sphinx.new_packet_from_surb(terminal.payload[2:2 + SURB_LEN], b"\x01\x00" + bytes([i]) * 2046)
        back = walk(reply, out.reply)
        other = outs[(i + 1) % len(outs)].surb
        with pytest.raises(sphinx.SphinxError):
            message.decrypt_reply(back.payload, other.keys)
        opened = book.open(commands(back)[SURBReply].id, back.payload)
        assert opened.context is out.surb and opened.body == bytes([i]) * 2046
    assert book.delivered == 13 and len(book) == 0


def test_a_bad_item_fails_the_whole_batch_before_any_packet(doc, monkeypatch):
    p1, p2 = doc.providers
    made = []
    monkeypatch.setattr(sphinx, "new_surbs", lambda *a, **k: made.append(1) or [])
    with pytest.raises(MessageError, match="at most 1490"):
        message.new_messages(doc, src_provider=p1, dst_provider=p2, recipient="bob", reply_to="alice",
                             bodies=[b"ok", b"x" * 1491], starts=[NOW, NOW])
    with pytest.raises(MessageError, match="2 bodies but 1 start"):
        message.new_kaetzchen_requests(doc, src_provider=p1, service_provider=p2, endpoint="+echo",
                                       reply_to="alice", bodies=[b"a", b"b"], starts=[NOW])
    with pytest.raises(MessageError, match="SURB ID of 3"):
        message.new_round_trips(doc, src_provider=p1, reply_to="alice",
                                trips=[message.RoundTrip(p2, "bob", b"", NOW, surb_id=b"abc")])
    assert made == []
    assert message.new_messages(doc, src_provider=p1, dst_provider=p2, recipient="bob", reply_to="alice",
                                bodies=[], starts=[]) == []
