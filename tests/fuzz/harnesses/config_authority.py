"""The authority's TOML configuration (`katzenpost.authority.config.parse`).

Documented outcome: an `AuthorityConfig` or `AuthorityConfigError` (its message lists the
problems). The file is read as UTF-8 text, so the harness skips inputs that are not."""
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
    return {"authority": text.encode(), "minimal": b'[Authority]\nIdentifier = "a"\n'}
