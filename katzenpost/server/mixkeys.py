"""The node's per-epoch Sphinx mix keys and their replay filters (spec: Katzenpost mix server, key
rotation; docs/node.md "Mix keys").

One X25519 key per epoch, in `DataDir/mixkey-<epoch>.private.pem` (PEM `X25519 PRIVATE KEY`,
0600), each with its replay filter `DataDir/replay-<epoch>.bloom` (server/replay.py). Keys exist
for the current epoch and the two after it; a key is destroyed, with its filter, once its epoch
is more than one epoch in the past. With `[Debug] MixKeysInMemory` neither keys nor filters
touch the disk.

The crypto workers get `workers.MixKeySet`s: the key of the current epoch, plus the previous one
during the grace period after a rollover or the next one during the grace period before it.
Implements the PKI worker's `MixKeyStore` protocol. Runs on the I/O thread; the workers only see
immutable key sets and the (thread-safe) filters.
"""
from __future__ import annotations

import hashlib
import logging
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from katzenpost import keys
from katzenpost._core.replay import BloomKernel
from katzenpost.pki.epochtime import EpochClock
from katzenpost.server import replay
from katzenpost.server.workers import MixKeySet

log = logging.getLogger("katzenpost.mixkeys")

PEM_TYPE = "X25519 PRIVATE KEY"
KEY_LENGTH = 32
FILE_PREFIX = "mixkey-"
FILE_SUFFIX = ".private.pem"
KEYS_AHEAD = 2                 # keys exist for [now, now+2] (NumMixKeys = 3)
REFERENCE_GRACE = 120.0        # seconds either side of a rollover with two candidate keys
# Replay-filter sizing: the packet rate a key's filter is built for, over the key's whole
# window (one epoch plus both grace periods). 10,000 packets/s for 20 minutes and 2 x 2 minutes
# is 14.4 M tags: a ~52 MB filter at a 1e-6 false-positive rate. Memory pages are touched only
# as tags arrive, so a quiet node uses far less.
DESIGN_PACKET_RATE = 10_000
FP_RATE = replay.DEFAULT_FP_RATE


class MixKeyError(Exception):
    """A mix key or its replay filter cannot be created, loaded or trusted."""


def grace_period(clock: EpochClock) -> float:
    """Seconds around a rollover during which two keys are tried: 2 minutes in the reference,
    P/8 on a test network with a shorter period (which also covers its P/10 early-send window)."""
    return REFERENCE_GRACE if not clock.is_warped else min(REFERENCE_GRACE, clock.period / 8)


def mix_key_path(data_dir, epoch: int) -> Path:
    return Path(data_dir) / f"{FILE_PREFIX}{epoch}{FILE_SUFFIX}"


def mix_key_epoch(path) -> int | None:
    name = Path(path).name
    if not (name.startswith(FILE_PREFIX) and name.endswith(FILE_SUFFIX)):
        return None
    digits = name[len(FILE_PREFIX):-len(FILE_SUFFIX)]
    return int(digits) if digits.isdigit() else None


def _owner(public: bytes) -> bytes:
    """What a replay filter records as its owner: it refuses to serve another key."""
    return hashlib.sha256(b"katzenpost mix key " + public).digest()


class MemoryReplayFilter:
    """A replay filter in anonymous memory (MixKeysInMemory): the same kernel and interface as
    `replay.ReplayFilter`, but nothing reaches a file, a swap-backed dump or a core file."""

    def __init__(self, expected_entries: int, fp_rate: float = FP_RATE) -> None:
        self.m_bits, self.k_probes = replay.bloom_parameters(expected_entries, fp_rate)
        # Bits plus one 64-bit counter, all in one anonymous private mapping.
        self._mapping = mmap.mmap(-1, self.m_bits // 8 + 8, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_DONTDUMP"):
            self._mapping.madvise(mmap.MADV_DONTDUMP)
        bits = np.frombuffer(self._mapping, dtype=np.uint64, count=self.m_bits // 64)
        counter = np.frombuffer(self._mapping, dtype=np.uint64, count=1, offset=self.m_bits // 8)
        self._kernel = BloomKernel(bits, self.m_bits, self.k_probes, os.urandom(replay.KEY_LENGTH), counter)
        del bits, counter

    @property
    def added(self) -> int:
        return int(self._kernel.added)

    def check_and_add(self, tags, mask=None, out=None) -> int:
        if out is None:
            raise ValueError("replay: check_and_add needs an out array of uint8[n]")
        return self._kernel.check_and_add(tags, mask, out)

    def sync(self) -> None:
        """Nothing to flush: the filter lives only in memory."""

    def close(self) -> None:
        if self._mapping is None:
            return
        self._kernel.release()
        self._mapping.close()
        self._mapping = None

    unlink = close


@dataclass
class MixKey:
    epoch: int
    private: bytearray = field(repr=False)      # a secret; zeroed by destroy()
    public: bytes
    filter: object = field(repr=False)          # replay.ReplayFilter or MemoryReplayFilter

    def destroy(self, *, delete_files: bool, data_dir) -> None:
        if delete_files:
            self.filter.unlink()
            if data_dir is not None:
                mix_key_path(data_dir, self.epoch).unlink(missing_ok=True)
        else:
            self.filter.close()
        self.private[:] = bytes(len(self.private))


class MixKeys:
    """The per-epoch key store (the PKI worker's MixKeyStore)."""

    def __init__(self, data_dir, clock: EpochClock, *, in_memory: bool = False,
                 expected_entries: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.in_memory = in_memory
        self.grace = grace_period(clock)
        window = clock.period + 2 * self.grace
        self.expected_entries = expected_entries or replay.expected_entries_for_rate(
            DESIGN_PACKET_RATE, window)
        self.keys: dict[int, MixKey] = {}
        self._pushed_epochs: tuple[int, ...] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Load the keys on disk that are still useful, delete stale ones, create [now, now+2]."""
        now = self.clock.current()
        if not self.in_memory:
            self._load_existing(now)
        self.generate(now)

    def close(self) -> None:
        """At halt: sync and close every filter, delete the expired ones, zero every key."""
        now = self.clock.current()
        for epoch in sorted(self.keys):
            key = self.keys.pop(epoch)
            try:
                key.filter.sync()
            except OSError as exc:
                log.error("Failed to sync the replay filter of epoch %d: %s", epoch, exc)
            key.destroy(delete_files=epoch < now - 1, data_dir=None if self.in_memory else self.data_dir)

    def sync(self) -> None:
        """Flush the replay filters to disk (every 60 s and at halt; thread-safe)."""
        for key in list(self.keys.values()):
            key.filter.sync()

    # --- MixKeyStore -----------------------------------------------------------------------

    def generate(self, base_epoch: int) -> bool:
        """Ensure keys for base_epoch .. base_epoch+2; True if any key was created."""
        created = False
        for epoch in range(base_epoch, base_epoch + KEYS_AHEAD + 1):
            if epoch in self.keys:
                continue
            try:
                self.keys[epoch] = self._create(epoch)
            except (OSError, replay.ReplayFilterError) as exc:
                raise MixKeyError(f"mixkeys: cannot create the key for epoch {epoch}: {exc}") from None
            log.debug("Generated the mix key for epoch %d", epoch)
            created = True
        return created

    def prune(self) -> bool:
        """Destroy keys (and filter files) of epochs before now-1; True if any was removed."""
        now = self.clock.current()
        expired = [e for e in self.keys if e < now - 1]
        for epoch in expired:
            key = self.keys.pop(epoch)
            log.debug("Purging the expired mix key of epoch %d", epoch)
            key.destroy(delete_files=True, data_dir=None if self.in_memory else self.data_dir)
        return bool(expired)

    def public_key(self, epoch: int) -> bytes | None:
        key = self.keys.get(epoch)
        return None if key is None else key.public

    # --- what the crypto workers get -------------------------------------------------------

    def candidate_epochs(self, unix_now: float) -> list[int]:
        """Epochs whose keys are tried at `unix_now`: current first, then the grace neighbour."""
        epoch, elapsed, till = self.clock.epoch_at(unix_now)
        epochs = [epoch]
        if elapsed < self.grace:
            epochs.append(epoch - 1)
        elif till < self.grace:
            epochs.append(epoch + 1)
        return [e for e in epochs if e in self.keys] if epoch in self.keys else []

    def keyset_at(self, unix_now: float) -> MixKeySet | None:
        """The key set for the workers at `unix_now`, or None without a key for the epoch."""
        epochs = self.candidate_epochs(unix_now)
        if not epochs:
            return None
        chosen = [self.keys[e] for e in epochs]
        raw = np.frombuffer(b"".join(bytes(k.private) for k in chosen), np.uint8).reshape(len(chosen), KEY_LENGTH)
        return MixKeySet(raw.copy(), tuple(k.filter for k in chosen))

    def seconds_to_next_change(self, unix_now: float) -> float:
        """Time until the candidate set can change (a grace boundary or a rollover)."""
        _, elapsed, till = self.clock.epoch_at(unix_now)
        marks = [self.grace - elapsed, till - self.grace, till]
        return min(m for m in marks if m > 0) if any(m > 0 for m in marks) else till

    # --- files -----------------------------------------------------------------------------

    def _create(self, epoch: int) -> MixKey:
        private = bytearray(os.urandom(KEY_LENGTH))
        public = keys.x25519_public(bytes(private))
        if self.in_memory:
            return MixKey(epoch, private, public, MemoryReplayFilter(self.expected_entries))
        # The filter first: a key file never exists without the filter that guards it.
        filter_path = replay.replay_filter_path(self.data_dir, epoch)
        filter_path.unlink(missing_ok=True)           # an orphan of a crash before the key was written
        replay_filter = replay.ReplayFilter.create(filter_path, self.expected_entries, FP_RATE,
                                                   epoch=epoch, owner=_owner(public))
        try:
            keys.write_file_atomic(str(mix_key_path(self.data_dir, epoch)),
                                   keys.encode_pem(PEM_TYPE, bytes(private)))
        except BaseException:
            replay_filter.unlink()
            raise
        return MixKey(epoch, private, public, replay_filter)

    def _load_existing(self, now: int) -> None:
        key_files = {}
        for entry in self.data_dir.iterdir():
            epoch = mix_key_epoch(entry)
            if epoch is not None:
                key_files[epoch] = entry
        filters = replay.list_replay_filters(self.data_dir)
        for epoch in sorted(set(key_files) | set(filters)):
            if epoch < now - 1 or epoch > now + KEYS_AHEAD:
                # Expired (or from a clock far ahead): useless, and a key must not outlive its use.
                log.debug("Purging stale key: %s", key_files.get(epoch) or filters.get(epoch))
                for path in (key_files.get(epoch), filters.get(epoch)):
                    if path is not None:
                        path.unlink(missing_ok=True)
                continue
            if epoch not in key_files:
                continue                              # an orphan filter: _create replaces it
            self.keys[epoch] = self._load(epoch, key_files[epoch], filters.get(epoch))

    def _load(self, epoch: int, key_path: Path, filter_path: Path | None) -> MixKey:
        try:
            private = bytearray(keys.read_pem_key(str(key_path), PEM_TYPE, KEY_LENGTH))
        except keys.KeyFileError as exc:
            raise MixKeyError(f"mixkeys: {exc}") from None
        public = keys.x25519_public(bytes(private))
        if filter_path is None:
            # Without its filter the key would accept every replay of what it already unwrapped.
            raise MixKeyError(f"mixkeys: the replay filter of the mix key for epoch {epoch} is "
                              f"missing ({replay.replay_filter_path(self.data_dir, epoch)}); refusing "
                              f"to use the key (delete {key_path} to discard it)")
        try:
            replay_filter = replay.ReplayFilter.open(filter_path, epoch=epoch, owner=_owner(public))
        except replay.ReplayFilterError as exc:
            raise MixKeyError(f"mixkeys: {exc}") from None
        log.debug("Loaded the mix key for epoch %d", epoch)
        return MixKey(epoch, private, public, replay_filter)
