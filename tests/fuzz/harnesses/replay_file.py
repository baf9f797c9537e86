"""Replay-filter files (`server.replay.ReplayFilter.open` over `_core.replay.BloomKernel`): the file
a node finds in its DataDir after a crash, a restart or someone else's hands.

The input is the 4096-byte header and a file-size choice. By default the harness writes the
header's checksum itself, so the fuzzer reaches the parameter and size checks and, when they
pass, a filter built from fuzzed parameters, which is then used (test-and-set of tags, contains,
sync). Documented outcome: a working filter or `ReplayFilterError`."""
import atexit
import hashlib
import os
import shutil
import struct
import tempfile

import numpy as np

from katzenpost.server import replay
from tests.fuzz.data import Reader
from tests.fuzz.material import derive

MAX_LEN = replay.HEADER_LENGTH + 16
# Files up to this size are written whole (sparse); the filter's bits are really mapped and used.
_MAX_FILE_BITS = 1 << 24
_DIR = tempfile.mkdtemp(prefix="kp-fuzz-replay-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
atexit.register(shutil.rmtree, _DIR, True)
_FIELDS = replay._HEADER_FIELDS
_CHECKSUM = replay._CHECKSUM_OFFSET
_TAGS = np.frombuffer(derive("replay tags", 32 * 4), dtype=np.uint8).reshape(4, 32).copy()


def _header(r: Reader) -> bytes:
    mode = r.byte()
    header = bytearray(r.exact(replay.HEADER_LENGTH))
    if mode & 1 == 0:  # a header with a good checksum over whatever fields it holds
        header[_CHECKSUM:_CHECKSUM + 32] = hashlib.blake2b(bytes(header[:_CHECKSUM]),
                                                           digest_size=32).digest()
    return bytes(header)


def _file_size(header: bytes, choice: int) -> int:
    m_bits = struct.unpack_from("<Q", header, 24)[0] if len(header) >= 32 else 0
    exact = replay.HEADER_LENGTH + m_bits // 8
    return (exact, exact - 1, exact + 8, len(header))[choice % 4]


def _use(flt: replay.ReplayFilter) -> None:
    out = np.zeros(len(_TAGS), dtype=np.uint8)
    flt.check_and_add(_TAGS, out=out)
    seen = np.zeros(len(_TAGS), dtype=np.uint8)
    flt.contains(_TAGS, seen)
    assert seen.all(), "a tag just added is not in the filter"
    assert flt.is_replay(_TAGS[0].tobytes())
    flt.sync()


def TestOneInput(data: bytes) -> None:
    r = Reader(data)
    header = _header(r)
    size = _file_size(header, r.byte())
    if size > replay.HEADER_LENGTH + _MAX_FILE_BITS // 8:
        size = len(header)  # not written whole: the size check must refuse it
    path = os.path.join(_DIR, "replay-1.bloom")
    with open(path, "wb") as handle:
        handle.write(header[:size])
        handle.truncate(size)
    try:
        flt = replay.ReplayFilter.open(path)
    except replay.ReplayFilterError:
        os.unlink(path)
        return
    try:
        _use(flt)
    finally:
        flt.close()
        os.unlink(path)


def seeds():
    out = {}
    for name, entries, rate in (("small", 1000, 1e-3), ("default", 4096, replay.DEFAULT_FP_RATE)):
        path = os.path.join(_DIR, f"seed-{name}.bloom")
        flt = replay.ReplayFilter.create(path, entries, rate, epoch=7, owner=derive("owner"))
        flt.close()
        with open(path, "rb") as handle:
            header = handle.read(replay.HEADER_LENGTH)
        os.unlink(path)
        out[name] = bytes([1]) + header + bytes([0])
        out[f"{name}-truncated"] = bytes([1]) + header + bytes([1])
    return out
