"""Replay filters of the node: one keyed Bloom filter per mix key, memory-mapped from a file in
DataDir so a crash or restart forgets no tag added before it. Refuses any file it cannot trust
(bad magic, version, checksum, size or owner) rather than resetting it, which would reopen replays."""

import fcntl
import hashlib
import math
import mmap
import os
import re
import struct
from pathlib import Path

import numpy as np

from katzenpost._core.replay import MAX_PROBES, TAG_LENGTH, BloomKernel

MAGIC = b"KZPRPLAY"
FORMAT_VERSION = 1
HASH_SIPHASH24_128 = 1
# The bits start one page in, so they are page- and word-aligned in the mapping.
HEADER_LENGTH = 4096
# magic, version, header_length, hash_id, k_probes, m_bits, expected_entries, fp_rate, epoch,
# key (16), owner (32); a BLAKE2b-256 of these bytes follows them.
_HEADER_FIELDS = struct.Struct("<8sIIIIQQdQ16s32s")
_CHECKSUM_OFFSET = _HEADER_FIELDS.size
_CHECKSUM_LENGTH = 32
# The count of added tags is updated in place, so it sits outside the checksummed bytes.
_COUNTER_OFFSET = 512
KEY_LENGTH = 16
OWNER_LENGTH = 32

DEFAULT_FP_RATE = 1e-6
# Memory allowed above the theoretical optimum (traded for fewer probes, see bloom_parameters).
MEMORY_SLACK = 1.05
# Probes are chosen so the predicted rate at expected_entries is at most this share of the
# target: one more probe (~7% slower) buys room for the statistical spread of real traffic.
FP_DESIGN_MARGIN = 0.8
# A filter never sized below this many entries, whatever the configured packet rate says.
MIN_EXPECTED_ENTRIES = 1 << 20
# 2^38 bits = 32 GiB: far beyond any sane configuration; guards against a typo'd rate.
MAX_FILTER_BITS = 1 << 38

FILE_PREFIX = "replay-"
FILE_SUFFIX = ".bloom"
_FILE_RE = re.compile(rf"^{re.escape(FILE_PREFIX)}(\d+){re.escape(FILE_SUFFIX)}$")


class ReplayFilterError(Exception):
    """A replay-filter file cannot be created or trusted; the message names the file and why."""


def bloom_false_positive_rate(m_bits: int, k_probes: int, entries: int) -> float:
    """Expected false-positive rate of a Bloom filter after `entries` distinct insertions."""
    return (1.0 - math.exp(-k_probes * entries / m_bits)) ** k_probes


def bloom_parameters(expected_entries: int, fp_rate: float) -> tuple[int, int]:
    """(m_bits, k_probes) for `expected_entries` tags at `fp_rate`.

    Memory is allowed MEMORY_SLACK above the theoretical optimum m = -n ln p / (ln 2)^2, and that
    slack buys fewer probes: the smallest k whose predicted rate is within FP_DESIGN_MARGIN of
    fp_rate. Each probe is a cache miss once the filter outgrows the cache, so at 1e-6 this turns
    20 misses per tag into 15.
    """
    if not isinstance(expected_entries, int) or expected_entries < 1:
        raise ValueError(f"replay: expected_entries must be an integer >= 1, got {expected_entries!r}")
    if not (0.0 < fp_rate < 0.5):
        raise ValueError(f"replay: fp_rate must be in (0, 0.5), got {fp_rate!r}")
    ln2 = math.log(2.0)
    ideal_bits = -expected_entries * math.log(fp_rate) / (ln2 * ln2)
    m_bits = max(64, math.floor(ideal_bits * MEMORY_SLACK / 64.0) * 64)
    if m_bits > MAX_FILTER_BITS:
        raise ValueError(f"replay: {expected_entries} entries at fp_rate {fp_rate} need {m_bits} bits, "
                         f"above the limit of {MAX_FILTER_BITS}")
    k_optimal = max(1, min(MAX_PROBES, round(m_bits / expected_entries * ln2)))
    for k_probes in range(1, k_optimal + 1):
        if bloom_false_positive_rate(m_bits, k_probes, expected_entries) <= fp_rate * FP_DESIGN_MARGIN:
            return m_bits, k_probes
    return m_bits, k_optimal


def expected_entries_for_rate(packets_per_second: float, window_seconds: float,
                              floor: int = MIN_EXPECTED_ENTRIES) -> int:
    """Entries a filter must hold for a packet rate over a key's window, never below `floor`."""
    if packets_per_second < 0 or window_seconds <= 0:
        raise ValueError(f"replay: need packets_per_second >= 0 and window_seconds > 0, "
                         f"got {packets_per_second!r}, {window_seconds!r}")
    return max(int(floor), math.ceil(packets_per_second * window_seconds))


def replay_filter_path(data_dir, epoch: int) -> Path:
    """DataDir/replay-<epoch>.bloom: the filter of the mix key for `epoch`."""
    if not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"replay: epoch must be an integer >= 0, got {epoch!r}")
    return Path(data_dir) / f"{FILE_PREFIX}{epoch}{FILE_SUFFIX}"


def replay_filter_epoch(path) -> int | None:
    """The epoch named by a replay-filter file name, or None if the name is not one."""
    match = _FILE_RE.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_replay_filters(data_dir) -> dict[int, Path]:
    """Every replay-filter file in DataDir, by epoch (for pruning files of expired keys)."""
    found = {}
    for entry in Path(data_dir).iterdir():
        epoch = replay_filter_epoch(entry)
        if epoch is not None and entry.is_file():
            found[epoch] = entry
    return found


def _pack_header(m_bits, k_probes, expected_entries, fp_rate, epoch, key, owner) -> bytes:
    fields = _HEADER_FIELDS.pack(MAGIC, FORMAT_VERSION, HEADER_LENGTH, HASH_SIPHASH24_128, k_probes,
                                 m_bits, expected_entries, fp_rate, epoch, key, owner)
    checksum = hashlib.blake2b(fields, digest_size=_CHECKSUM_LENGTH).digest()
    return (fields + checksum).ljust(HEADER_LENGTH, b"\0")


def _parse_header(path, header: bytes, file_size: int) -> dict:
    """Validate a header and the file size against it; raise ReplayFilterError naming the fault."""
    if header[:8] != MAGIC[:len(header)] or len(header) == 0:
        raise ReplayFilterError(f"replay filter {path}: not a replay-filter file (bad magic)")
    if file_size < HEADER_LENGTH:
        raise ReplayFilterError(f"replay filter {path}: truncated file, {file_size} bytes, "
                                f"shorter than its {HEADER_LENGTH}-byte header")
    (_, version, header_length, hash_id, k_probes, m_bits, expected_entries, fp_rate, epoch, key,
     owner) = _HEADER_FIELDS.unpack_from(header)
    if version != FORMAT_VERSION:
        raise ReplayFilterError(f"replay filter {path}: format version {version} is not supported "
                                f"(this build reads {FORMAT_VERSION})")
    checksum = header[_CHECKSUM_OFFSET:_CHECKSUM_OFFSET + _CHECKSUM_LENGTH]
    if hashlib.blake2b(header[:_CHECKSUM_OFFSET], digest_size=_CHECKSUM_LENGTH).digest() != checksum:
        raise ReplayFilterError(f"replay filter {path}: header checksum mismatch (corrupted header)")
    if header_length != HEADER_LENGTH or hash_id != HASH_SIPHASH24_128:
        raise ReplayFilterError(f"replay filter {path}: unsupported layout (header_length="
                                f"{header_length}, hash_id={hash_id})")
    if m_bits == 0 or m_bits % 64 or m_bits > MAX_FILTER_BITS or not 1 <= k_probes <= MAX_PROBES:
        raise ReplayFilterError(f"replay filter {path}: invalid parameters m_bits={m_bits}, "
                                f"k_probes={k_probes}")
    expected_size = HEADER_LENGTH + m_bits // 8
    if file_size != expected_size:
        state = "truncated" if file_size < expected_size else "oversized"
        raise ReplayFilterError(f"replay filter {path}: {state} file, {file_size} bytes where the "
                                f"header demands {expected_size}")
    return dict(m_bits=m_bits, k_probes=k_probes, expected_entries=expected_entries,
                fp_rate=fp_rate, epoch=epoch, key=key, owner=owner)


def _reserve(fd: int, size: int) -> None:
    """Give the file its full size with every block allocated. The bits are written through a
    shared mapping: a page that is a hole in a sparse file needs a block when a tag first lands
    in it, and on a full file system the kernel answers that write with SIGBUS, which kills the
    node. Allocating up front turns a full disk into a clear error at create or open instead."""
    os.ftruncate(fd, size)
    os.posix_fallocate(fd, 0, size)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ReplayFilter:
    """A persistent, thread-safe replay filter (test-and-set of 32-byte Sphinx replay tags).

    False positives (rate about `fp_rate` while at most `expected_entries` tags were added) make
    a fresh packet look like a replay; it is then dropped like one.
    """

    def __init__(self, path: Path, fd: int, mapping: mmap.mmap, params: dict):
        self.path = path
        self._fd = fd
        self._mapping = mapping
        self.m_bits = params["m_bits"]
        self.k_probes = params["k_probes"]
        self.expected_entries = params["expected_entries"]
        self.fp_rate = params["fp_rate"]
        self.epoch = params["epoch"]
        self.owner = params["owner"]
        bits = np.frombuffer(mapping, dtype=np.uint64, count=self.m_bits // 64, offset=HEADER_LENGTH)
        counter = np.frombuffer(mapping, dtype=np.uint64, count=1, offset=_COUNTER_OFFSET)
        self._kernel = BloomKernel(bits, self.m_bits, self.k_probes, params["key"], counter)
        del bits, counter  # the kernel holds the only views, so close() can unmap

    @classmethod
    def create(cls, path, expected_entries: int, fp_rate: float = DEFAULT_FP_RATE, *,
               epoch: int = 0, owner: bytes = bytes(OWNER_LENGTH)) -> "ReplayFilter":
        """Create a new filter file (mode 0600; refuses to overwrite) and open it.

        `epoch` and `owner` (e.g. a hash of the mix public key) are recorded so that open() can
        refuse a file that belongs to another key.
        """
        path = Path(path)
        m_bits, k_probes = bloom_parameters(expected_entries, fp_rate)
        if len(owner) != OWNER_LENGTH:
            raise ValueError(f"replay: owner must be {OWNER_LENGTH} bytes, got {len(owner)}")
        header = _pack_header(m_bits, k_probes, expected_entries, float(fp_rate), int(epoch),
                              os.urandom(KEY_LENGTH), bytes(owner))
        # Build the file under a temporary name and link it into place: a crash mid-way never
        # leaves a half-written filter under the real name, and an existing filter is never replaced.
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise ReplayFilterError(f"replay filter {path}: cannot create: {exc.strerror}") from None
        try:
            os.write(fd, header)
            _reserve(fd, HEADER_LENGTH + m_bits // 8)
            os.fsync(fd)
        except OSError as exc:
            os.unlink(tmp)
            raise ReplayFilterError(f"replay filter {path}: cannot create: {exc.strerror}") from None
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise ReplayFilterError(f"replay filter {path}: already exists; open it instead") from None
        finally:
            os.unlink(tmp)
        _fsync_dir(path.parent)
        return cls.open(path, epoch=epoch, owner=owner)

    @classmethod
    def open(cls, path, *, epoch: int | None = None, owner: bytes | None = None) -> "ReplayFilter":
        """Open an existing filter file; refuse it if it is damaged, in use or not the expected one."""
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise ReplayFilterError(f"replay filter {path}: cannot open: {exc.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ReplayFilterError(f"replay filter {path}: in use by another filter or process") from None
            file_size = os.fstat(fd).st_size
            params = _parse_header(path, os.pread(fd, HEADER_LENGTH, 0), file_size)
            if epoch is not None and params["epoch"] != epoch:
                raise ReplayFilterError(f"replay filter {path}: belongs to epoch {params['epoch']}, "
                                        f"expected {epoch}")
            if owner is not None and params["owner"] != bytes(owner):
                raise ReplayFilterError(f"replay filter {path}: belongs to another mix key (owner mismatch)")
            try:
                _reserve(fd, file_size)          # a sparse file of an older build gets its blocks
            except OSError as exc:
                raise ReplayFilterError(f"replay filter {path}: cannot reserve its disk space: "
                                        f"{exc.strerror}") from None
            mapping = mmap.mmap(fd, file_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, mapping, params)

    @property
    def added(self) -> int:
        """Tags newly added to this filter so far (persisted with the bits)."""
        return int(self._kernel.added)

    @property
    def closed(self) -> bool:
        return self._mapping is None

    def check_and_add(self, tags, mask=None, out=None) -> int:
        """Test-and-set a batch: out[i] = 1 if tags[i] (uint8[n, 32]) was already present.

        Rows with mask[i] == 0 are neither tested nor added (out[i] untouched). Returns the number
        of rows present. Safe to call from several threads; the GIL is released for the batch.
        """
        if out is None:
            raise ValueError("replay: check_and_add needs an out array of uint8[n]")
        return self._kernel.check_and_add(tags, mask, out)

    def contains(self, tags, out) -> int:
        """Membership test without adding (for measurement and diagnostics)."""
        return self._kernel.contains(tags, out)

    def is_replay(self, tag: bytes) -> bool:
        """Single-tag test-and-set with the reference's rule: a tag that is not 32 bytes is a replay."""
        if len(tag) != TAG_LENGTH:
            return True
        out = np.zeros(1, dtype=np.uint8)
        self._kernel.check_and_add(np.frombuffer(bytes(tag), dtype=np.uint8).reshape(1, TAG_LENGTH), None, out)
        return bool(out[0])

    def sync(self) -> None:
        """Flush the mapped bits to disk (msync). A process crash needs no sync; power loss does."""
        if self._mapping is not None:
            self._mapping.flush()

    def close(self) -> None:
        """Flush, unmap and release the file lock. Idempotent."""
        if self._mapping is None:
            return
        self._kernel.release()
        self._mapping.flush()
        self._mapping.close()
        self._mapping = None
        os.close(self._fd)
        self._fd = -1

    def unlink(self) -> None:
        """Close and delete the file: the mix key expired, its tags can no longer be replayed."""
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        _fsync_dir(self.path.parent)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_mapping", None) is not None:
            self.close()
