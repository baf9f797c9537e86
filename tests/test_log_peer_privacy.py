"""Operators' rule: peer IP addresses and keys are logged only at DEBUG.

The node's listeners take a good session (packets, then a bad command that closes it), a peer the
PKI does not know, a stalled handshake, a peer that resets the connection mid-session; the node
dials a port where nobody listens. At INFO no peer address (127.0.0.1:<the peer's port>) and no
peer link key appears in the log; at DEBUG the same exchange names the peers (the control that
shows the INFO check looks at the lines that would carry them)."""
import asyncio
import logging
import socket

import pytest

from node_support import free_port
from katzenpost import keys
from katzenpost.wire import WireError, connect
from katzenpost.wire.commands import SendPacket
from test_node_incoming import NODE, PEER, PEER_LINK, closed, dial, packet, started, until
from katzenpost.server.incoming import ListenerSettings

STRANGER = keys.IdentityKey.generate()
STRANGER_LINK = keys.LinkKey.generate()


def local_port(session) -> int:
    return session._writer.get_extra_info("sockname")[1]


async def exchange() -> tuple[set[str], set[str]]:
    """Run every kind of session event against real listeners; return the peers' addresses and
    the peers' link keys (hex) as they could appear in a log line."""
    addresses, link_keys = set(), {PEER_LINK.public.hex(), STRANGER_LINK.public.hex()}
    listeners, port = await started(settings=ListenerSettings(handshake_timeout=0.3, reauth_interval=60))
    try:
        good = await dial(port)
        addresses.add(f"127.0.0.1:{local_port(good)}")
        await good.send_command(SendPacket(packet(1)))
        await until(lambda: listeners.pipeline.submitted)
        await good.send_command(SendPacket(b"short"))              # closes it, logged at INFO
        assert await closed(good)

        with pytest.raises(WireError):                               # unknown to the PKI
            await connect("127.0.0.1", port, link_key=STRANGER_LINK.private,
                          additional_data=STRANGER.public,
                          authenticator=lambda c: c.additional_data == NODE.public, handshake_timeout=3)

        stalled = socket.create_connection(("127.0.0.1", port))    # the handshake times out
        addresses.add(f"127.0.0.1:{stalled.getsockname()[1]}")

        reset = await dial(port)                                     # RST in the middle of a session
        addresses.add(f"127.0.0.1:{local_port(reset)}")
        raw = reset._writer.get_extra_info("socket")
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        reset._writer.transport.abort()

        await asyncio.sleep(0.6)
        stalled.close()
        await until(lambda: not listeners.connections and not listeners.handshaking)
    finally:
        await listeners.stop()
    nobody = free_port()                                             # the connector's failed dial
    addresses.add(f"127.0.0.1:{nobody}")
    with pytest.raises(WireError):
        await connect("127.0.0.1", nobody, link_key=PEER_LINK.private, additional_data=PEER.public,
                      authenticator=lambda c: True, handshake_timeout=2)
    return addresses, link_keys


def run_logged(caplog, level) -> tuple[str, set[str], set[str]]:
    caplog.clear()
    caplog.set_level(level, logger="katzenpost")
    addresses, link_keys = asyncio.run(asyncio.wait_for(exchange(), 20))
    return caplog.text, addresses, link_keys


def test_info_logs_carry_no_peer_address_or_key(caplog):
    text, addresses, link_keys = run_logged(caplog, logging.INFO)
    # every event was logged above DEBUG: closed, rejected, timed out, reset, refused dial
    wire = [r for r in caplog.records if r.name == "katzenpost.wire" and r.levelno > logging.DEBUG]
    assert len(wire) >= 5, text
    leaked = [a for a in addresses | link_keys if a in text]
    assert leaked == [], f"peer addresses or keys at INFO: {leaked}\n{text}"


def test_debug_logs_name_the_peers(caplog):
    text, addresses, link_keys = run_logged(caplog, logging.DEBUG)
    named = [a for a in addresses if a in text]
    assert len(named) == len(addresses), f"{addresses - set(named)} missing from\n{text}"
    assert STRANGER_LINK.public.hex() in text
