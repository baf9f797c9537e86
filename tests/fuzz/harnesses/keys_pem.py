"""PEM key files (`katzenpost.keys`): `decode_pem`, and the DataDir loaders of the identity and
link keys reading the fuzz input as their file; `decode_key_string` (keys in configs and
commands) on the same bytes as text.

Documented outcome: `decode_pem` returns (type, body, rest) or raises its own ValueError ("no PEM
block found"; any other ValueError is a finding), and a block it finds encodes back to one it
decodes the same; the loaders return a key or raise `KeyFileError`; `decode_key_string` returns
bytes or raises its own ValueError ("neither hex nor base64")."""
import atexit
import os
import shutil
import tempfile

from katzenpost import keys
from tests.fuzz.material import derive

MAX_LEN = 4096
_DIR = tempfile.mkdtemp(prefix="kp-fuzz-keys-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
atexit.register(shutil.rmtree, _DIR, True)


def _pem(data: bytes) -> None:
    try:
        block_type, body, rest = keys.decode_pem(data)
    except ValueError as exc:  # ValueError is broad: only the parser's own refusal is expected
        assert str(exc) == "no PEM block found", repr(exc)
        return
    assert isinstance(block_type, str) and isinstance(body, bytes) and isinstance(rest, bytes)
    if "\n" not in block_type and "\r" not in block_type:
        again = keys.decode_pem(keys.encode_pem(block_type, body))
        assert again == (block_type, body, b""), "PEM round trip differs"


def _load(data: bytes, name: str, loader) -> None:
    path = os.path.join(_DIR, name)
    with open(path, "wb") as handle:
        handle.write(data)
    try:
        loader(_DIR)
    except keys.KeyFileError:
        pass
    finally:
        os.unlink(path)


def TestOneInput(data: bytes) -> None:
    _pem(data)
    _load(data, keys.IDENTITY_PRIVATE_FILE, keys.load_identity_key)
    _load(data, keys.LINK_PRIVATE_FILE, keys.load_link_key)
    try:
        keys.decode_key_string(data.decode("latin-1"))
    except ValueError as exc:
        assert str(exc) == "neither hex nor base64", repr(exc)


def seeds():
    identity = keys.IdentityKey.from_seed(derive("keys identity"))
    link = keys.LinkKey.from_private(derive("keys link"))
    return {
        "identity": keys.encode_pem(keys.PEM_ED25519_PRIVATE, identity.go_bytes()),
        "identity-public": keys.encode_pem(keys.PEM_ED25519_PUBLIC, identity.public),
        "link": keys.encode_pem(keys.PEM_X25519_PRIVATE, link.private),
        "headers": (b"junk\n-----BEGIN X25519 PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\n"
                    + keys.encode_pem(keys.PEM_X25519_PRIVATE, link.private).split(b"\n", 1)[1]),
        "hex-key": link.public.hex().encode(),
    }
