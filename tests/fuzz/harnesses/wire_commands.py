"""Wire commands into `parse_command` (every decoder of the Wire Protocol Specification).

Documented outcome: a `Command` or `CommandError`. A decoded command must encode back to the bytes
it came from (header and body; the zero padding after it is not part of the command), and those
bytes must decode to an equal command."""
from katzenpost.wire import commands as wc
from katzenpost.wire.commands import COMMAND_HEADER_LENGTH
from tests.fuzz.material import derive

MAX_LEN = 4096


def TestOneInput(data: bytes) -> None:
    try:
        command = wc.parse_command(data)
    except wc.CommandError:
        return
    encoded = command.to_bytes()
    body_length = int.from_bytes(data[2:COMMAND_HEADER_LENGTH], "big")
    original = data[:COMMAND_HEADER_LENGTH + body_length]
    if isinstance(command, wc.MessageEmpty):  # its queue-size hint is ignored on receive, sent as 0
        hint = COMMAND_HEADER_LENGTH + 1
        original = original[:hint] + b"\0" + original[hint + 1:]
    assert encoded == original, "re-encoding differs"
    assert wc.parse_command(encoded) == command, "decode(encode(command)) differs"
    repr(command)  # commands end up in logs


def seeds():
    key = derive("vote key")
    cmds = [wc.NoOp(), wc.Disconnect(), wc.SendPacket(derive("packet", 100)),
            wc.RetrieveMessage(7), wc.Message(1, 2, derive("msg", wc.USER_FORWARD_PAYLOAD_LENGTH)),
            wc.MessageACK(3, 4, derive("surb", 16), derive("ack", wc.MESSAGE_ACK_PAYLOAD_LENGTH)),
            wc.MessageEmpty(5), wc.GetConsensus(123456), wc.Consensus(0, b"{document}"),
            wc.PostDescriptor(123456, b"descriptor"), wc.PostDescriptorStatus(1),
            wc.Vote(9, key, b"vote"), wc.VoteStatus(2), wc.GetVote(9, key),
            wc.Reveal(9, key, b"reveal"), wc.RevealStatus(8)]
    out = {type(c).__name__: c.to_bytes() for c in cmds}
    out["padded-noop"] = wc.NoOp().to_bytes() + bytes(10)
    return out
