"""Identity (Ed25519) and link (X25519) key files in the DataDir, in the Go reference's PEM forms.

Files are written 0600 (atomically) and read back strictly; a bad file is a KeyFileError naming
the file, never a crash. This module never logs key material and never starts anything.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

PUBLIC_KEY_SIZE = 32
ED25519_SEED_SIZE = 32
ED25519_GO_PRIVATE_SIZE = 64  # seed || public key, the Go form stored in the PEM body
X25519_PRIVATE_SIZE = 32

IDENTITY_PRIVATE_FILE = "identity.private.pem"
IDENTITY_PUBLIC_FILE = "identity.public.pem"
LINK_PRIVATE_FILE = "link.private.pem"

PEM_ED25519_PRIVATE = "ED25519 PRIVATE KEY"
PEM_ED25519_PUBLIC = "ED25519 PUBLIC KEY"
PEM_X25519_PRIVATE = "X25519 PRIVATE KEY"

DATA_DIR_MODE = 0o700
KEY_FILE_MODE = 0o600
PEM_LINE_CHARS = 64
MAX_KEY_FILE_BYTES = 64 * 1024  # a key file is < 200 bytes; never read a huge file or a device

_RAW = serialization.Encoding.Raw


class KeyFileError(Exception):
    """A key file or the DataDir is unusable; the message names the path and the reason."""


# ---------------------------------------------------------------------------------------------
# Keys


@dataclass(frozen=True, repr=False)
class IdentityKey:
    """An Ed25519 identity key pair (the node's NodeID is `public`)."""

    seed: bytes
    public: bytes

    @classmethod
    def generate(cls) -> "IdentityKey":
        return cls.from_seed(os.urandom(ED25519_SEED_SIZE))

    @classmethod
    def from_seed(cls, seed: bytes) -> "IdentityKey":
        if len(seed) != ED25519_SEED_SIZE:
            raise ValueError("invalid key")
        private = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(seed))
        return cls(bytes(seed), private.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw))

    @classmethod
    def from_bytes(cls, raw: bytes) -> "IdentityKey":
        """A 32-byte seed or the 64-byte Go form (seed || public, the public half checked)."""
        if len(raw) == ED25519_SEED_SIZE:
            return cls.from_seed(raw)
        if len(raw) != ED25519_GO_PRIVATE_SIZE:
            raise ValueError("invalid key")
        key = cls.from_seed(raw[:ED25519_SEED_SIZE])
        if key.public != bytes(raw[ED25519_SEED_SIZE:]):
            raise ValueError("invalid key: the public half does not match the seed")
        return key

    def go_bytes(self) -> bytes:
        return self.seed + self.public

    def private_key(self) -> ed25519.Ed25519PrivateKey:
        return ed25519.Ed25519PrivateKey.from_private_bytes(self.seed)

    def sign(self, message: bytes) -> bytes:
        return self.private_key().sign(message)

    def to_x25519_private(self) -> bytes:
        """The reference's ToECDH: SHA-512(seed)[0:32], clamped (used to talk to authorities)."""
        scalar = bytearray(hashlib.sha512(self.seed).digest()[:32])
        scalar[0] &= 248
        scalar[31] &= 127
        scalar[31] |= 64
        return bytes(scalar)

    def to_x25519_public(self) -> bytes:
        return x25519_public(self.to_x25519_private())

    def __repr__(self) -> str:  # never show the seed
        return f"IdentityKey(public={self.public.hex()})"


@dataclass(frozen=True, repr=False)
class LinkKey:
    """An X25519 link key pair used by the wire protocol (`private` is the raw scalar)."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> "LinkKey":
        return cls.from_private(os.urandom(X25519_PRIVATE_SIZE))

    @classmethod
    def from_private(cls, raw: bytes) -> "LinkKey":
        if len(raw) != X25519_PRIVATE_SIZE:
            raise ValueError("invalid key")
        return cls(bytes(raw), x25519_public(raw))

    def __repr__(self) -> str:
        return f"LinkKey(public={self.public.hex()})"


def x25519_public(private: bytes) -> bytes:
    key = x25519.X25519PrivateKey.from_private_bytes(bytes(private))
    return key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)


def decode_key_string(text: str) -> bytes:
    """A key written in a config or a command: hex tried first, then standard padded base64.

    As in the reference, a string that is valid hex is taken as hex even if its length is then
    wrong; the caller checks the length.
    """
    if len(text) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text)
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("neither hex nor base64") from None


def public_key_hex(public: bytes) -> str:
    """The form the start banner prints: uppercase hex."""
    return public.hex().upper()


def public_key_base64(public: bytes) -> str:
    """The reference's String() form: standard padded base64."""
    return base64.b64encode(public).decode("ascii")


# ---------------------------------------------------------------------------------------------
# PEM, as Go's encoding/pem writes and reads it


def encode_pem(block_type: str, body: bytes) -> bytes:
    text = base64.b64encode(body).decode("ascii")
    lines = [text[i:i + PEM_LINE_CHARS] for i in range(0, len(text), PEM_LINE_CHARS)]
    return ("".join([f"-----BEGIN {block_type}-----\n"] + [line + "\n" for line in lines]
                    + [f"-----END {block_type}-----\n"])).encode("ascii")


def _split_line(data: bytes) -> tuple[bytes, bytes]:
    """One line without its end-of-line and trailing blanks, and the rest (like Go's getLine)."""
    end = data.find(b"\n")
    if end < 0:
        line, rest = data, b""
    else:
        line, rest = data[:end], data[end + 1:]
    return line.rstrip(b" \t\r"), rest


def decode_pem(data: bytes) -> tuple[str, bytes, bytes]:
    """The first well-formed PEM block: (type, body, the bytes after it). ValueError if none."""
    search = data
    while True:
        start = search.find(b"-----BEGIN ")
        if start < 0:
            raise ValueError("no PEM block found")
        if start > 0 and search[start - 1:start] != b"\n":
            search = search[start + 1:]
            continue
        header, rest = _split_line(search[start:])
        if not header.endswith(b"-----") or len(header) <= len(b"-----BEGIN -----"):
            search = search[start + 1:]
            continue
        block_type = header[len(b"-----BEGIN "):-len(b"-----")]
        decoded = _pem_body(block_type, rest)
        if decoded is not None:
            body, after = decoded
            try:
                return block_type.decode("ascii"), body, after
            except UnicodeDecodeError:
                pass
        search = search[start + 1:]


def _pem_body(block_type: bytes, rest: bytes) -> tuple[bytes, bytes] | None:
    """Headers (ignored), base64 lines and the matching END line; None if malformed."""
    end_marker = b"-----END " + block_type + b"-----"
    lines = []
    in_headers = True
    while rest:
        line, rest = _split_line(rest)
        if line == end_marker:
            try:
                body = base64.b64decode(b"".join(lines), validate=True)
            except binascii.Error:
                return None
            return body, rest
        if in_headers and b":" in line:
            continue
        if in_headers and not line and not lines:
            in_headers = False
            continue
        in_headers = False
        lines.append(line.replace(b" ", b"").replace(b"\t", b""))
    return None


def read_pem_key(path: str, block_type: str, size: int) -> bytes:
    """The body of the one PEM block of `block_type` in `path`, exactly `size` bytes long."""
    try:
        with open(path, "rb") as key_file:
            data = key_file.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as err:
        raise KeyFileError(f"keys: cannot read '{path}': {err.strerror or err}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"keys: '{path}': larger than {MAX_KEY_FILE_BYTES} bytes, not a key file")
    try:
        found_type, body, rest = decode_pem(data)
    except ValueError as err:
        raise KeyFileError(f"keys: '{path}': {err}") from None
    if rest:
        raise KeyFileError(f"keys: '{path}': trailing garbage after PEM encoded private key")
    if found_type != block_type:
        raise KeyFileError(f"keys: '{path}': invalid PEM Type: '{found_type}' (want '{block_type}')")
    if len(body) != size:
        raise KeyFileError(f"keys: '{path}': invalid key ({len(body)} bytes, want {size})")
    return body


def write_file_atomic(path: str, data: bytes, mode: int = KEY_FILE_MODE) -> None:
    """Write `data` to `path` with `mode` via a temporary file and rename (no torn key files)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pem")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


# ---------------------------------------------------------------------------------------------
# DataDir and the key files in it


def ensure_data_dir(path: str) -> None:
    """Create DataDir 0700, or accept an existing one only if it is a directory of mode 0700."""
    info = _lstat_data_dir(path)
    if info is not None:
        problem = _data_dir_problem(path, info)
        if problem:
            raise KeyFileError(problem)
        return
    try:
        os.mkdir(path, DATA_DIR_MODE)
        os.chmod(path, DATA_DIR_MODE)  # the umask may have narrowed it; never widen beyond
    except OSError as err:
        raise KeyFileError(f"DataDir '{path}' cannot be created: {err.strerror or err}") from None


def check_data_dir(path: str) -> list[str]:
    """What would stop a start in an existing DataDir (type, mode, unreadable key files).

    Changes nothing; a DataDir that does not exist yet has no problems (it will be created).
    """
    try:
        info = _lstat_data_dir(path)
    except KeyFileError as err:
        return [str(err)]
    if info is None:
        return []
    problem = _data_dir_problem(path, info)
    problems = [problem] if problem else []
    if not stat.S_ISDIR(info.st_mode):
        return problems
    for file_name, load in ((IDENTITY_PRIVATE_FILE, load_identity_key), (LINK_PRIVATE_FILE, load_link_key)):
        if os.path.lexists(os.path.join(path, file_name)):
            try:
                load(path)
            except KeyFileError as err:
                problems.append(str(err))
    return problems


def key_file_warnings(data_dir: str) -> list[str]:
    """A warning for each private key file in DataDir that others than its owner may open.

    The reference does not look at these modes, and DataDir's own 0700 already keeps other
    users out, so this is a warning rather than a refusal: a copied or restored key file with a
    wide mode is still worth fixing before DataDir's mode ever changes.
    """
    warnings = []
    for name in (IDENTITY_PRIVATE_FILE, LINK_PRIVATE_FILE):
        path = os.path.join(data_dir, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue  # absent (or unreadable: loading it reports why)
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISREG(info.st_mode) and mode & 0o077:
            warnings.append(f"private key file '{path}' has mode {mode:04o}: group or others may "
                            f"open it; it should be {KEY_FILE_MODE:04o} (chmod 600 '{path}')")
    return warnings


def _lstat_data_dir(path: str) -> os.stat_result | None:
    """lstat() of DataDir (a symlink is not followed, as in the reference), None if missing."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise KeyFileError(f"DataDir '{path}' cannot be examined: {err.strerror or err}") from None


def _data_dir_problem(path: str, info: os.stat_result) -> str | None:
    if not stat.S_ISDIR(info.st_mode):
        return f"DataDir '{path}' is not a directory"
    mode = stat.S_IMODE(info.st_mode)
    if mode != DATA_DIR_MODE:
        return (f"DataDir '{path}' has invalid permissions '{stat.filemode(info.st_mode)}' "
                f"({mode:04o}; it must be exactly 0700)")
    return None


def load_identity_key(data_dir: str) -> IdentityKey:
    path = os.path.join(data_dir, IDENTITY_PRIVATE_FILE)
    body = read_pem_key(path, PEM_ED25519_PRIVATE, ED25519_GO_PRIVATE_SIZE)
    try:
        return IdentityKey.from_bytes(body)
    except ValueError as err:
        raise KeyFileError(f"keys: '{path}': {err}") from None


def write_identity_key(data_dir: str, key: IdentityKey) -> None:
    """Write the private file, then the public one (0600 both)."""
    write_file_atomic(os.path.join(data_dir, IDENTITY_PRIVATE_FILE),
                      encode_pem(PEM_ED25519_PRIVATE, key.go_bytes()))
    write_file_atomic(os.path.join(data_dir, IDENTITY_PUBLIC_FILE),
                      encode_pem(PEM_ED25519_PUBLIC, key.public))


def load_or_create_identity_key(data_dir: str) -> tuple[IdentityKey, bool]:
    """The identity key from DataDir, created on first use. Returns (key, created)."""
    if os.path.lexists(os.path.join(data_dir, IDENTITY_PRIVATE_FILE)):
        return load_identity_key(data_dir), False  # the public file is never rewritten
    key = IdentityKey.generate()
    write_identity_key(data_dir, key)
    return key, True


def load_link_key(data_dir: str) -> LinkKey:
    path = os.path.join(data_dir, LINK_PRIVATE_FILE)
    return LinkKey.from_private(read_pem_key(path, PEM_X25519_PRIVATE, X25519_PRIVATE_SIZE))


def write_link_key(data_dir: str, key: LinkKey) -> None:
    write_file_atomic(os.path.join(data_dir, LINK_PRIVATE_FILE), encode_pem(PEM_X25519_PRIVATE, key.private))


def load_or_create_link_key(data_dir: str) -> tuple[LinkKey, bool]:
    """The link key from DataDir, created on first use (there is no link.public.pem)."""
    if os.path.lexists(os.path.join(data_dir, LINK_PRIVATE_FILE)):
        return load_link_key(data_dir), False
    key = LinkKey.generate()
    write_link_key(data_dir, key)
    return key, True
