"""The authority's TOML configuration (`katzenpost.authority.config.parse`), the non-voting form
and the voting form (`[[Authorities]]`, the peer authorities).

Documented outcome: an `AuthorityConfig` or `AuthorityConfigError` (its message lists the
problems). The file is read as UTF-8 text, so the harness skips inputs that are not."""
import base64

from katzenpost.authority import config as authority_config
from tests.fuzz.material import derive

MAX_LEN = 8192


def TestOneInput(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # load() reports this before parse() sees the text
    for keys_only in (False, True):
        try:
            authority_config.parse(text, keys_only)
        except authority_config.AuthorityConfigError:
            pass


def seeds():
    keys = [derive(f"authority config node {i}").hex() for i in range(5)]
    text = ('[Authority]\nIdentifier = "auth"\nAddresses = ["127.0.0.1:29999"]\n'
            'DataDir = "/var/lib/katzenpost-authority"\n'
            '[Logging]\nDisable = false\nLevel = "NOTICE"\n'
            '[Parameters]\nSendRatePerMinute = 100\nMu = 0.001\nMuMaxDelay = 90000\n'
            'LambdaP = 0.0001234\n[Debug]\nLayers = 3\nMinNodesPerLayer = 1\n')
    for key in keys[:3]:
        text += f'[[Mixes]]\nIdentityKey = "{key}"\n'
    for i, key in enumerate(keys[3:]):
        text += f'[[Providers]]\nIdentifier = "provider{i}"\nIdentityKey = "{key}"\n'
    # The voting form: the other authorities, identity keys in hex or base64, link keys base64.
    peers = "".join(f'[[Authorities]]\nIdentityPublicKey = "{ident}"\n'
                    f'LinkPublicKey = "{_b64(derive(f"authority peer link {i}"))}"\n'
                    f'Addresses = ["127.0.0.1:{30010 + i}", "[::1]:{30010 + i}"]\n'
                    for i, ident in enumerate((derive("authority peer 0").hex(),
                                               _b64(derive("authority peer 1")))))
    return {"authority": text.encode(), "minimal": b'[Authority]\nIdentifier = "a"\n',
            "voting": (text + peers).encode(), "voting-alone": ("Authorities = []\n" + text).encode()}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
