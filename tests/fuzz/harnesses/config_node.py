"""The node's TOML configuration (`katzenpost.config.load_bytes`, what `katzenpost -f` reads),
with a non-voting or a voting (`[PKI.Voting]`) PKI.

Documented outcome: a `Config` or `ConfigError` whose problems are strings starting `config: `."""
import base64
from pathlib import Path

from katzenpost import config
from tests.fuzz.material import derive

MAX_LEN = 8192
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def TestOneInput(data: bytes) -> None:
    try:
        config.load_bytes(data)
    except config.ConfigError as err:
        assert err.problems and all(isinstance(p, str) and p.startswith("config: ")
                                    for p in err.problems), err.problems
    try:
        config.load_bytes(data, keys_only=True)
    except config.ConfigError:
        pass


def seeds():
    out = {path.stem: path.read_bytes() for path in sorted(CONFIGS.glob("*.toml"))}
    out["voting_mix"] = _voting(out["minimal_mix"])
    return out


def _voting(text: bytes) -> bytes:
    """A node trusting voting authorities: [PKI.Voting] and its [[PKI.Voting.Peers]] in place of
    [PKI.Nonvoting] (identity keys hex or base64, link keys base64)."""
    head, tail = text.split(b"[PKI]", 1)
    peers = b"".join(
        b'[[PKI.Voting.Peers]]\nAddresses = ["127.0.0.1:%d", "[::1]:%d"]\n' % (30000 + i, 30000 + i)
        + b'IdentityPublicKey = "%s"\nLinkPublicKey = "%s"\n'
        % (ident, base64.b64encode(derive(f"node voting peer link {i}")))
        for i, ident in enumerate((derive("node voting peer 0").hex().encode(),
                                   base64.b64encode(derive("node voting peer 1")))))
    return head + b"[PKI]\n  [PKI.Voting]\n" + peers + tail[tail.index(b"\n["):]
