"""No link-session secret in any log record above DEBUG (tracebacks included): the Noise
handshake's shared secrets (the X25519 results and the Kyber secret it mixes in, and the chaining
keys they give) and the transport keys of every session, next to the link private keys of both
sides. They never touch a file, so tests/test_security_network.py (which looks for what the key
files hold) cannot see them; here they are recorded as the handshakes make them, while the
node's listeners go through good, rejected, timed-out and reset sessions
(tests/test_log_peer_privacy.py's exchange), and every textual form of each is looked for."""
import asyncio
import logging

import pytest

from security_support import forms
from test_log_peer_privacy import STRANGER_LINK, exchange
from test_node_incoming import NODE_LINK, PEER_LINK
from katzenpost.wire.handshake import Handshake
from katzenpost.wire.noise import SymmetricState


class _Records(logging.Handler):
    """Every record above DEBUG, formatted as a log file would carry it (with its traceback)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.above_debug, self.count = [], 0

    def emit(self, record):
        self.count += 1
        if record.levelno > logging.DEBUG:
            self.above_debug.append(self.format(record))


@pytest.fixture
def recorded(monkeypatch):
    """The secrets every handshake of the test makes, as it makes them."""
    secrets = {"link private keys": [NODE_LINK.private, PEER_LINK.private, STRANGER_LINK.private],
               "DH and KEM shared secrets": [], "chaining keys": [], "transport keys": []}
    mix_key, split = SymmetricState.mix_key, Handshake.split

    def recording_mix_key(self, input_key_material):
        secrets["DH and KEM shared secrets"].append(bytes(input_key_material))
        mix_key(self, input_key_material)
        secrets["chaining keys"].append(bytes(self.chaining_key))

    def recording_split(self):
        keys = split(self)
        secrets["transport keys"].extend(bytes(k) for k in keys)
        return keys

    monkeypatch.setattr(SymmetricState, "mix_key", recording_mix_key)
    monkeypatch.setattr(Handshake, "split", recording_split)
    return secrets


def test_no_session_secret_is_logged_above_debug(recorded):
    records = _Records()
    logger = logging.getLogger("katzenpost")
    saved = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    try:
        asyncio.run(asyncio.wait_for(exchange(), 20))
    finally:
        logger.removeHandler(records)
        logger.setLevel(saved)
    # The control: handshakes ran on both sides (two complete sessions: four transport keys each),
    # and the listeners logged the closed, rejected, timed-out and reset sessions above DEBUG.
    assert len(recorded["transport keys"]) >= 8, recorded["transport keys"]
    assert len(recorded["DH and KEM shared secrets"]) >= 2 * 4
    assert len(records.above_debug) >= 5, records.above_debug
    text = "\n".join(records.above_debug)
    leaked = sorted({f"{kind}: {form}" for kind, values in recorded.items() for value in values
                     for form in forms(value) if form in text})
    assert leaked == [], f"{leaked}\n{text}"
