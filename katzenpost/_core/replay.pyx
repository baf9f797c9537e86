# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Keyed Bloom-filter kernel behind the replay filter: batched test-and-set of 32-byte tags over a
caller-owned uint64 bit array (usually a memory-mapped file), one nogil call per batch.
No I/O and no file format here; that lives in katzenpost.server.replay."""

from cpython.pythread cimport (PyThread_type_lock, PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_acquire_lock, PyThread_release_lock, WAIT_LOCK)
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef extern from "replay_impl.h" nogil:
    int REPLAY_TAG_LEN
    void replay_siphash24_128(const uint8_t *key, const uint8_t *data, size_t data_len, uint8_t *out)
    size_t replay_bloom_check_and_add(uint64_t *bits, uint64_t m_bits, uint32_t k_probes,
                                      const uint8_t *key, const uint8_t *tags, size_t n,
                                      const uint8_t *mask, uint8_t *out, uint64_t *added_out)
    size_t replay_bloom_contains(const uint64_t *bits, uint64_t m_bits, uint32_t k_probes,
                                 const uint8_t *key, const uint8_t *tags, size_t n, uint8_t *out)
    void replay_bloom_indexes(uint64_t m_bits, uint32_t k_probes, const uint8_t *key,
                              const uint8_t *tag, uint64_t *idx_out)

TAG_LENGTH = 32
KEY_LENGTH = 16
MAX_PROBES = 64


def siphash24_128(bytes key not None, const uint8_t[::1] data not None):
    """SipHash-2-4 with a 128-bit output (reference byte order); exposed for known-answer tests."""
    cdef uint8_t out[16]
    if len(key) != 16:
        raise ValueError(f"replay: SipHash key must be 16 bytes, got {len(key)}")
    cdef const uint8_t *key_ptr = key
    cdef const uint8_t *data_ptr = &data[0] if data.shape[0] > 0 else NULL
    replay_siphash24_128(key_ptr, data_ptr, <size_t>data.shape[0], out)
    return bytes(out[:16])


cdef class BloomKernel:
    """Test-and-set over `bits` (uint64[m_bits/64]) with k probes keyed by a 16-byte secret.

    `counter` is a one-word uint64 array (may live in the mapped file header) that counts tags
    newly added. Writers are serialised by one lock held for a whole batch.
    """
    cdef uint64_t[::1] bits
    cdef uint64_t[::1] counter
    cdef uint64_t m_bits
    cdef uint32_t k_probes
    cdef uint8_t key[16]
    cdef PyThread_type_lock lock
    cdef bint released

    def __cinit__(self, uint64_t[::1] bits not None, uint64_t m_bits, uint32_t k_probes,
                  bytes key not None, uint64_t[::1] counter not None):
        if m_bits == 0 or m_bits % 64 != 0:
            raise ValueError(f"replay: m_bits must be a positive multiple of 64, got {m_bits}")
        if <uint64_t>bits.shape[0] != m_bits // 64:
            raise ValueError(f"replay: bit array holds {bits.shape[0]} words, "
                             f"expected {m_bits // 64} for m_bits={m_bits}")
        if k_probes < 1 or k_probes > MAX_PROBES:
            raise ValueError(f"replay: k_probes must be in 1..{MAX_PROBES}, got {k_probes}")
        if len(key) != 16:
            raise ValueError(f"replay: key must be 16 bytes, got {len(key)}")
        if counter.shape[0] < 1:
            raise ValueError("replay: counter array must hold one word")
        self.lock = PyThread_allocate_lock()
        if self.lock == NULL:
            raise MemoryError("replay: cannot allocate the filter lock")
        self.bits = bits
        self.counter = counter
        self.m_bits = m_bits
        self.k_probes = k_probes
        memcpy(self.key, <const uint8_t *>key, 16)
        self.released = False

    def __dealloc__(self):
        if self.lock != NULL:
            PyThread_free_lock(self.lock)
            self.lock = NULL

    @property
    def m_bits(self):
        return self.m_bits

    @property
    def k_probes(self):
        return self.k_probes

    @property
    def added(self):
        """Tags newly added since the filter was created (persisted in `counter`)."""
        self._check_open()
        return self.counter[0]

    cdef _check_open(self):
        if self.released:
            raise ValueError("replay: filter is closed")

    def check_and_add(self, const uint8_t[:, ::1] tags not None, const uint8_t[::1] mask,
                      uint8_t[::1] out not None):
        """out[i] = 1 if tag row i was already present; rows with mask[i] == 0 are left alone.

        Returns how many rows were present. One nogil call, one lock hold per batch.
        """
        cdef Py_ssize_t n = tags.shape[0]
        cdef const uint8_t *mask_ptr = NULL
        cdef size_t present = 0
        cdef uint64_t added = 0
        if n > 0 and tags.shape[1] != TAG_LENGTH:
            raise ValueError(f"replay: tags must be rows of {TAG_LENGTH} bytes, got {tags.shape[1]}")
        if out.shape[0] < n:
            raise ValueError(f"replay: out holds {out.shape[0]} entries, need {n}")
        if mask is not None:
            if mask.shape[0] < n:
                raise ValueError(f"replay: mask holds {mask.shape[0]} entries, need {n}")
            if n > 0:
                mask_ptr = &mask[0]
        if n == 0:
            self._check_open()
            return 0
        with nogil:
            PyThread_acquire_lock(self.lock, WAIT_LOCK)
            if not self.released:
                present = replay_bloom_check_and_add(&self.bits[0], self.m_bits, self.k_probes,
                                                     self.key, &tags[0, 0], <size_t>n, mask_ptr,
                                                     &out[0], &added)
                self.counter[0] += added
            PyThread_release_lock(self.lock)
        self._check_open()
        return present

    def contains(self, const uint8_t[:, ::1] tags not None, uint8_t[::1] out not None):
        """Membership without adding (false-positive measurement); returns how many were present."""
        cdef Py_ssize_t n = tags.shape[0]
        cdef size_t present = 0
        if n > 0 and tags.shape[1] != TAG_LENGTH:
            raise ValueError(f"replay: tags must be rows of {TAG_LENGTH} bytes, got {tags.shape[1]}")
        if out.shape[0] < n:
            raise ValueError(f"replay: out holds {out.shape[0]} entries, need {n}")
        self._check_open()
        if n == 0:
            return 0
        with nogil:
            PyThread_acquire_lock(self.lock, WAIT_LOCK)
            if not self.released:
                present = replay_bloom_contains(&self.bits[0], self.m_bits, self.k_probes,
                                                self.key, &tags[0, 0], <size_t>n, &out[0])
            PyThread_release_lock(self.lock)
        self._check_open()
        return present

    def indexes(self, const uint8_t[::1] tag not None):
        """The k bit indexes probed for one tag (differential tests against the Python twin)."""
        cdef uint64_t idx[64]
        if tag.shape[0] != TAG_LENGTH:
            raise ValueError(f"replay: a tag is {TAG_LENGTH} bytes, got {tag.shape[0]}")
        replay_bloom_indexes(self.m_bits, self.k_probes, self.key, &tag[0], idx)
        return [idx[j] for j in range(self.k_probes)]

    def release(self):
        """Drop the views of the bit array (waits for a running batch); later calls raise."""
        with nogil:
            PyThread_acquire_lock(self.lock, WAIT_LOCK)
        self.released = True
        self.bits = None
        self.counter = None
        PyThread_release_lock(self.lock)
