"""Sans-I/O Noise XXhfs handshake of the Katzenpost link layer (the Wire Protocol Specification).

``Handshake`` turns the three fixed-size messages (1601 / 1940 / 324 bytes, prologue byte and
AuthenticateMessage included) into peer credentials and split transport keys. It never touches
a socket, a clock or a random source of its own: ``rng`` and ``clock`` are injected, so a
recorded transcript replays byte for byte.
"""
from __future__ import annotations

import hmac
import os
import struct
import time
from dataclasses import dataclass
from typing import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .errors import HandshakeError
from .kem import CIPHERTEXT_LENGTH, KEM, PUBLIC_KEY_LENGTH, KEMError, default_kem
from .noise import DH_LENGTH, PROTOCOL_NAME, TAG_LENGTH, NonceExhausted, SymmetricState

PROTOCOL_VERSION = 0x02
PROLOGUE = bytes([PROTOCOL_VERSION])
MAX_ADDITIONAL_DATA_LENGTH = 255
AUTH_MESSAGE_LENGTH = 1 + MAX_ADDITIONAL_DATA_LENGTH + 4
_AUTH_TIME = struct.Struct(">I")

MSG1_LENGTH = len(PROLOGUE) + DH_LENGTH + PUBLIC_KEY_LENGTH
MSG2_LENGTH = (DH_LENGTH + (CIPHERTEXT_LENGTH + TAG_LENGTH) + (DH_LENGTH + TAG_LENGTH)
               + (AUTH_MESSAGE_LENGTH + TAG_LENGTH))
MSG3_LENGTH = (DH_LENGTH + TAG_LENGTH) + (AUTH_MESSAGE_LENGTH + TAG_LENGTH)

RandomBytes = Callable[[int], bytes]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    """What the peer proved in the handshake: its AD and its static X25519 link public key."""

    additional_data: bytes
    public_key: bytes


def check_additional_data(additional_data: bytes) -> bytes:
    """The AD as bytes; more than 255 bytes cannot be sent, so it is refused up front."""
    if len(additional_data) > MAX_ADDITIONAL_DATA_LENGTH:
        raise ValueError(f"wire: additional_data is {len(additional_data)} bytes, "
                         f"at most {MAX_ADDITIONAL_DATA_LENGTH} allowed")
    return bytes(additional_data)


def encode_auth_message(additional_data: bytes, unix_time: int) -> bytes:
    """The 260-byte AuthenticateMessage: ad_len ‖ AD ‖ zero padding ‖ uint32 BE time."""
    additional_data = check_additional_data(additional_data)
    body = bytes([len(additional_data)]) + additional_data
    return body.ljust(AUTH_MESSAGE_LENGTH - 4, b"\x00") + _AUTH_TIME.pack(unix_time & 0xFFFFFFFF)


def decode_auth_message(message: bytes) -> tuple[bytes, int]:
    """(AD, unix_time); the padding is not checked, as in the reference."""
    if len(message) != AUTH_MESSAGE_LENGTH:
        raise HandshakeError(f"wire: AuthenticateMessage is {len(message)} bytes, "
                             f"expected {AUTH_MESSAGE_LENGTH}")
    ad_length = message[0]
    unix_time, = _AUTH_TIME.unpack_from(message, AUTH_MESSAGE_LENGTH - 4)
    return bytes(message[1:1 + ad_length]), unix_time


def _dh(private_key: X25519PrivateKey, public_key: bytes, what: str) -> bytes:
    try:
        return private_key.exchange(X25519PublicKey.from_public_bytes(public_key))
    except ValueError:  # all-zero shared secret: only a malicious peer key produces it
        raise HandshakeError(f"wire: X25519 {what} gave a low-order result") from None


def _load_static_key(link_key: bytes) -> X25519PrivateKey:
    if not isinstance(link_key, (bytes, bytearray)) or len(link_key) != DH_LENGTH:
        raise ValueError(f"wire: link_key must be {DH_LENGTH} raw bytes")
    return X25519PrivateKey.from_private_bytes(bytes(link_key))


class Handshake:
    """One side of Noise_XXhfs_25519+Kyber1024_ChaChaPoly_BLAKE2b with Katzenpost's framing.

    Drive it with ``write_message()`` and ``read_message(data)`` as ``wants_write`` /
    ``wants_read`` say; ``next_read_length`` is the exact byte count to read. Once the peer's
    static key and AD are known, ``peer_credentials`` is set (after msg 2 for the initiator,
    msg 3 for the responder); when ``is_complete``, ``split()`` gives (tx_key, rx_key).
    Any error leaves the object failed: every later call raises ``HandshakeError``.
    """

    # Per role: which operation each of the three steps is.
    _STEPS = {True: ("write", "read", "write"), False: ("read", "write", "read")}

    def __init__(self, *, initiator: bool, link_key: bytes, additional_data: bytes,
                 kem: KEM | None = None, rng: RandomBytes = os.urandom,
                 clock: Clock = time.time) -> None:
        self.initiator = initiator
        self.additional_data = check_additional_data(additional_data)
        self._static = _load_static_key(link_key)
        self._static_public = self._static.public_key().public_bytes_raw()
        self._kem = kem if kem is not None else default_kem()
        self._rng = rng
        self._clock = clock
        self._symmetric = SymmetricState(PROTOCOL_NAME)
        self._symmetric.mix_hash(PROLOGUE)
        self._step = 0
        self._failed = False
        self._ephemeral: X25519PrivateKey | None = None
        self._kem_keypair = None
        self._remote_ephemeral: bytes | None = None
        self._remote_kem_public: bytes | None = None
        self._remote_static: bytes | None = None
        self.peer_credentials: PeerCredentials | None = None
        self.peer_unix_time: int | None = None
        self.clock_skew: float | None = None  # initiator only: local time − responder time

    # -- state ----------------------------------------------------------------------------

    @property
    def is_complete(self) -> bool:
        return self._step == 3 and not self._failed

    @property
    def wants_write(self) -> bool:
        return self._next_operation() == "write"

    @property
    def wants_read(self) -> bool:
        return self._next_operation() == "read"

    @property
    def next_read_length(self) -> int:
        """Bytes the next ``read_message`` needs (0 if a write or nothing is due)."""
        if not self.wants_read:
            return 0
        return {0: MSG1_LENGTH, 1: MSG2_LENGTH, 2: MSG3_LENGTH}[self._step]

    @property
    def handshake_hash(self) -> bytes:
        return self._symmetric.handshake_hash

    @property
    def chaining_key(self) -> bytes:
        return self._symmetric.chaining_key

    def _next_operation(self) -> str | None:
        if self._failed or self._step >= 3:
            return None
        return self._STEPS[self.initiator][self._step]

    def _expect(self, operation: str) -> None:
        if self._failed:
            raise HandshakeError("wire: handshake already failed")
        if self._next_operation() != operation:
            raise HandshakeError(f"wire: handshake step {self._step + 1} is not a {operation}")

    # -- public operations -----------------------------------------------------------------

    def write_message(self) -> bytes:
        self._expect("write")
        writers = {0: self._write_msg1, 1: self._write_msg2, 2: self._write_msg3}
        try:
            message = writers[self._step]()
        except HandshakeError:
            self._failed = True
            raise
        except (ValueError, KEMError, NonceExhausted) as exc:
            self._failed = True
            raise HandshakeError(f"wire: writing handshake message {self._step + 1}: {exc}") from None
        self._step += 1
        return message

    def read_message(self, data: bytes) -> None:
        self._expect("read")
        readers = {0: (MSG1_LENGTH, self._read_msg1), 1: (MSG2_LENGTH, self._read_msg2),
                   2: (MSG3_LENGTH, self._read_msg3)}
        expected_length, reader = readers[self._step]
        number = self._step + 1
        try:
            if len(data) != expected_length:
                raise HandshakeError(f"wire: handshake message {number} is {len(data)} bytes, "
                                     f"expected {expected_length}")
            reader(memoryview(bytes(data)))
        except HandshakeError:
            self._failed = True
            raise
        except InvalidTag:
            self._failed = True
            raise HandshakeError(f"wire: handshake message {number}: authentication tag mismatch") from None
        except (ValueError, KEMError, NonceExhausted) as exc:
            self._failed = True
            raise HandshakeError(f"wire: handshake message {number}: {exc}") from None
        self._step += 1

    def split(self) -> tuple[bytes, bytes]:
        """(tx_key, rx_key) for this side; only after the handshake is complete."""
        if not self.is_complete:
            raise HandshakeError("wire: split before the handshake completed")
        initiator_to_responder, responder_to_initiator = self._symmetric.split()
        if self.initiator:
            return initiator_to_responder, responder_to_initiator
        return responder_to_initiator, initiator_to_responder

    # -- tokens ----------------------------------------------------------------------------

    def _token_e_write(self) -> bytes:
        self._ephemeral = X25519PrivateKey.from_private_bytes(self._rng(DH_LENGTH))
        public = self._ephemeral.public_key().public_bytes_raw()
        self._symmetric.mix_hash(public)
        return public

    def _token_e_read(self, public: bytes) -> None:
        self._remote_ephemeral = bytes(public)
        self._symmetric.mix_hash(self._remote_ephemeral)

    def _token_s_write(self) -> bytes:
        return self._symmetric.encrypt_and_hash(self._static_public)

    def _token_s_read(self, ciphertext: memoryview) -> None:
        self._remote_static = self._symmetric.decrypt_and_hash(bytes(ciphertext))

    def _payload_write(self) -> bytes:
        unix_time = 0 if self.initiator else int(self._clock())
        return self._symmetric.encrypt_and_hash(encode_auth_message(self.additional_data, unix_time))

    def _payload_read(self, ciphertext: memoryview) -> None:
        plaintext = self._symmetric.decrypt_and_hash(bytes(ciphertext))
        additional_data, unix_time = decode_auth_message(plaintext)
        self.peer_unix_time = unix_time
        if self.initiator:
            self.clock_skew = self._clock() - unix_time
        self.peer_credentials = PeerCredentials(additional_data, self._remote_static)

    # -- messages (offsets follow the token order of XXhfs) --------------------------------

    def _write_msg1(self) -> bytes:
        """-> e, e1 (Kyber public key in clear: no key yet), empty payload."""
        ephemeral_public = self._token_e_write()
        self._kem_keypair = self._kem.generate_keypair(self._rng)
        kem_public = self._symmetric.encrypt_and_hash(self._kem_keypair.public_bytes)
        payload = self._symmetric.encrypt_and_hash(b"")
        return PROLOGUE + ephemeral_public + kem_public + payload

    def _read_msg1(self, message: memoryview) -> None:
        if not hmac.compare_digest(bytes(message[:1]), PROLOGUE):
            raise HandshakeError(f"wire: unsupported protocol version 0x{message[0]:02x}")
        offset = len(PROLOGUE)
        self._token_e_read(message[offset:offset + DH_LENGTH])
        offset += DH_LENGTH
        self._remote_kem_public = self._symmetric.decrypt_and_hash(
            bytes(message[offset:offset + PUBLIC_KEY_LENGTH]))
        offset += PUBLIC_KEY_LENGTH
        self._symmetric.decrypt_and_hash(bytes(message[offset:]))

    def _write_msg2(self) -> bytes:
        """<- e, ee, ekem1, s, es, AuthenticateMessage(responder time)."""
        parts = [self._token_e_write()]
        self._symmetric.mix_key(_dh(self._ephemeral, self._remote_ephemeral, "ee"))
        kem_ciphertext, kem_secret = self._kem.encapsulate(self._remote_kem_public, self._rng)
        parts.append(self._symmetric.encrypt_and_hash(kem_ciphertext))
        self._symmetric.mix_key(kem_secret)
        parts.append(self._token_s_write())
        self._symmetric.mix_key(_dh(self._static, self._remote_ephemeral, "es"))
        parts.append(self._payload_write())
        return b"".join(parts)

    def _read_msg2(self, message: memoryview) -> None:
        offset = 0
        self._token_e_read(message[offset:offset + DH_LENGTH])
        offset += DH_LENGTH
        self._symmetric.mix_key(_dh(self._ephemeral, self._remote_ephemeral, "ee"))
        kem_ciphertext = self._symmetric.decrypt_and_hash(
            bytes(message[offset:offset + CIPHERTEXT_LENGTH + TAG_LENGTH]))
        offset += CIPHERTEXT_LENGTH + TAG_LENGTH
        self._symmetric.mix_key(self._kem.decapsulate(self._kem_keypair, kem_ciphertext))
        self._token_s_read(message[offset:offset + DH_LENGTH + TAG_LENGTH])
        offset += DH_LENGTH + TAG_LENGTH
        self._symmetric.mix_key(_dh(self._ephemeral, self._remote_static, "es"))
        self._payload_read(message[offset:])

    def _write_msg3(self) -> bytes:
        """-> s, se, AuthenticateMessage(time 0)."""
        static_ciphertext = self._token_s_write()
        self._symmetric.mix_key(_dh(self._static, self._remote_ephemeral, "se"))
        return static_ciphertext + self._payload_write()

    def _read_msg3(self, message: memoryview) -> None:
        self._token_s_read(message[:DH_LENGTH + TAG_LENGTH])
        self._symmetric.mix_key(_dh(self._ephemeral, self._remote_static, "se"))
        self._payload_read(message[DH_LENGTH + TAG_LENGTH:])
