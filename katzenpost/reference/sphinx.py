"""Pure-Python Sphinx (pyca/cryptography + the Python AEZ): the twin of `_core.sphinx`.

Used only by the differential tests and as the benchmark baseline; never by the server. It has
its own routing-command codec (byte layout, terminator and duplicate rules, the creation-time
checks), written from the Sphinx Packet Format Specification: the production codec
(`katzenpost.sphinx.commands`) is never called, so the differential tests compare two codecs.
Only the command *value* classes are shared, so that results compare equal.
"""
import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from katzenpost.sphinx import errors
from katzenpost.sphinx.commands import NextNodeHop, NodeDelay, Recipient, SURBReply
from katzenpost.sphinx import geometry as g
from katzenpost.sphinx.errors import SphinxError
from katzenpost.sphinx.types import Unwrapped

BASE_POINT = bytes([9]) + bytes(31)
VERSION = bytes(g.AD_LENGTH)
P = g.PER_HOP_ROUTING_INFO_LENGTH
R = g.ROUTING_INFO_LENGTH


def x25519(scalar, point):
    """X25519 like Go's curve25519.ScalarMult: an all-zero result is returned, not raised."""
    try:
        return X25519PrivateKey.from_private_bytes(bytes(scalar)).exchange(
            X25519PublicKey.from_public_bytes(bytes(point))
        )
    except ValueError:
        return bytes(32)


def public_key(private_key):
    return x25519(private_key, BASE_POINT)


def sha512_256(data):
    return hashlib.new("sha512_256", bytes(data)).digest()


def mac(key, data):
    return hmac.digest(key, bytes(data), "sha256")[: g.MAC_LENGTH]


def hkdf_expand(prk, info, length):
    return HKDFExpand(hashes.SHA256(), length, info).derive(bytes(prk))


def kdf(shared_secret):
    """KDF(ss) -> dict of the per-hop keys (the Sphinx Packet Format Specification, key derivation)."""
    okm = hkdf_expand(shared_secret, g.KDF_INFO, g.KDF_OUTPUT_LENGTH)
    return {
        "header_mac": okm[0:32],
        "header_encryption": okm[32:48],
        "header_encryption_iv": okm[48:64],
        "payload_encryption": okm[64:112],
        "blinding_factor": okm[112:144],
    }


def stream(key, iv, length):
    """AES-128-CTR keystream with the whole IV as a 128-bit big-endian counter."""
    encryptor = Cipher(algorithms.AES(bytes(key)), modes.CTR(bytes(iv))).encryptor()
    return encryptor.update(bytes(length)) + encryptor.finalize()


def xor(a, b):
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def sprp_encrypt(key, iv, data):
    from katzenpost.reference import aez  # imported on use: the AEZ twin is large and slow

    return aez.encrypt(bytes(key), bytes(iv), [], 0, bytes(data))


def sprp_decrypt(key, iv, data):
    from katzenpost.reference import aez

    return aez.decrypt(bytes(key), bytes(iv), [], 0, bytes(data))


def create_header(path, rng=os.urandom, filler=os.urandom):
    """Header creation (the Sphinx Packet Format Specification): returns (header, [(sprp_key, sprp_iv) per hop])."""
    n = len(path)
    if not 1 <= n <= g.NR_HOPS:
        raise SphinxError(errors.INVALID_PATH)
    blocks = _path_blocks(path)
    ephemeral = bytes(rng(g.GROUP_ELEMENT_LENGTH))
    alphas, keys = [], []
    blindings = []
    alpha = public_key(ephemeral)
    for i, hop in enumerate(path):
        secret = x25519(ephemeral, hop.public_key)
        for b in blindings:
            secret = x25519(b, secret)
        k = kdf(secret)
        if i > 0:
            alpha = x25519(blindings[-1], alpha)
        alphas.append(alpha)
        keys.append(k)
        blindings.append(k["blinding_factor"])
    keystreams, fillers = [], []
    for i, k in enumerate(keys):
        s = stream(k["header_encryption"], k["header_encryption_iv"], R + P)
        keystreams.append(s[: R - i * P])
        phi = s[R - i * P :]
        if i > 0:
            phi = xor(phi[: i * P], fillers[-1]) + phi[i * P :]
        fillers.append(phi)
    beta = bytes(filler((g.NR_HOPS - n) * P)) if n < g.NR_HOPS else b""
    gamma = b""
    for i in range(n - 1, -1, -1):
        block = blocks[i]
        if i < n - 1:
            block += _encode(NextNodeHop(path[i + 1].id, gamma))
        block = block.ljust(P, b"\x00")
        beta = xor(block + beta, keystreams[i])
        prev_filler = fillers[i - 1] if i > 0 else b""
        gamma = mac(keys[i]["header_mac"], VERSION + alphas[i] + beta + prev_filler)
    header = VERSION + alphas[0] + beta + gamma
    return header, [(k["payload_encryption"], k["header_encryption_iv"]) for k in keys]


def new_packet(path, payload, rng=os.urandom, filler=os.urandom):
    header, sprp_keys = create_header(path, rng or os.urandom, filler or os.urandom)
    body = bytes(g.PAYLOAD_TAG_LENGTH) + bytes(payload)
    for key, iv in reversed(sprp_keys):
        body = sprp_encrypt(key, iv, body)
    return header + body


def new_surb(path, rng=os.urandom, filler=os.urandom):
    rng = rng or os.urandom
    reply_key = bytes(rng(g.SPRP_KEY_MATERIAL_LENGTH))
    header, sprp_keys = create_header(path, rng, filler or os.urandom)
    surb = header + bytes(path[0].id) + reply_key
    keys = b"".join(key + iv for key, iv in reversed(sprp_keys)) + reply_key
    return surb, keys


def new_packet_from_surb(surb, payload):
    surb = bytes(surb)
    if len(surb) != g.SURB_LENGTH:
        raise SphinxError(errors.INVALID_SURB)
    header = surb[: g.HEADER_LENGTH]
    first_hop = surb[g.HEADER_LENGTH : g.HEADER_LENGTH + g.NODE_ID_LENGTH]
    key_material = surb[g.HEADER_LENGTH + g.NODE_ID_LENGTH :]
    body = sprp_encrypt(key_material[: g.SPRP_KEY_LENGTH], key_material[g.SPRP_KEY_LENGTH :],
                        bytes(g.PAYLOAD_TAG_LENGTH) + bytes(payload))
    return header + body, first_hop


def decrypt_surb_payload(payload, keys):
    keys = bytes(keys)
    step = g.SPRP_KEY_MATERIAL_LENGTH
    if len(keys) == 0 or len(keys) % step:
        raise SphinxError(errors.INVALID_SURB_KEYS)
    if len(payload) < g.PAYLOAD_TAG_LENGTH:
        _fail(errors.ERR_TRUNCATED_PAYLOAD)
    body = bytes(payload)
    entries = [keys[i : i + step] for i in range(0, len(keys), step)]
    for entry in entries[:-1]:
        body = sprp_encrypt(entry[: g.SPRP_KEY_LENGTH], entry[g.SPRP_KEY_LENGTH :], body)
    last = entries[-1]
    body = sprp_decrypt(last[: g.SPRP_KEY_LENGTH], last[g.SPRP_KEY_LENGTH :], body)
    if any(body[: g.PAYLOAD_TAG_LENGTH]):
        _fail(errors.ERR_PAYLOAD_AUTH)
    return body[g.PAYLOAD_TAG_LENGTH :]


def _fail(code, tag=None):
    raise SphinxError.from_code(code, tag)


# --- the twin's own routing-command codec ---------------------------------------------------

_NULL, _NEXT_NODE_HOP, _RECIPIENT, _SURB_REPLY, _NODE_DELAY = 0x00, 0x01, 0x02, 0x03, 0x80
# Whole command lengths, id byte included: hop ID 32 + MAC 16, recipient 64, SURB ID 16, uint32.
_LENGTH = {_NEXT_NODE_HOP: 49, _RECIPIENT: 65, _SURB_REPLY: 17, _NODE_DELAY: 5}


def _encode(cmd):
    if type(cmd) is NextNodeHop:
        return bytes([_NEXT_NODE_HOP]) + cmd.id + cmd.mac
    if type(cmd) is Recipient:
        return bytes([_RECIPIENT]) + cmd.id
    if type(cmd) is SURBReply:
        return bytes([_SURB_REPLY]) + cmd.id
    if type(cmd) is NodeDelay:
        return bytes([_NODE_DELAY]) + cmd.delay.to_bytes(4, "big")
    raise TypeError(f"reference sphinx: not a routing command: {cmd!r}")


def _hop_block(commands, is_terminal):
    """One hop's user commands, with the reference's checks (the NextNodeHop is added later)."""
    for cmd in commands:
        if type(cmd) is NextNodeHop:
            raise SphinxError(errors.INVALID_COMMANDS_NEXT_NODE)
        if type(cmd) not in (Recipient, SURBReply, NodeDelay):
            raise TypeError(f"reference sphinx: not a routing command: {cmd!r}")
    block = b"".join(_encode(cmd) for cmd in commands)
    if len(block) > P:
        raise SphinxError(errors.INVALID_COMMANDS_OVERSIZED)
    if not is_terminal and len(block) > P - _LENGTH[_NEXT_NODE_HOP]:
        raise SphinxError(errors.INVALID_COMMANDS_CAPACITY)
    return block


def _path_blocks(path):
    """Every hop's block, checked from the terminal hop backwards as the reference builds them."""
    n = len(path)
    return [_hop_block(path[i].commands, i == n - 1) for i in reversed(range(n))][::-1]


def _decode(cmd_id, body):
    if cmd_id == _NEXT_NODE_HOP:
        return NextNodeHop(body[:32], body[32:])
    if cmd_id == _RECIPIENT:
        return Recipient(body)
    if cmd_id == _SURB_REPLY:
        return SURBReply(body)
    return NodeDelay(int.from_bytes(body, "big"))


def _parse_slot(slot, tag):
    """The reference's command loop: a duplicate NextNodeHop / SURBReply fails as soon as
    it is read, before any later (possibly invalid) bytes. Returns (commands, next, surb)."""
    commands, next_hop, surb_reply = [], None, None
    offset = 0
    while offset < len(slot):
        cmd_id = slot[offset]
        if cmd_id == _NULL:
            if any(slot[offset + 1:]):
                _fail(errors.ERR_INVALID_COMMAND, tag)
            break
        length = _LENGTH.get(cmd_id)
        if length is None or len(slot) - offset < length:
            _fail(errors.ERR_INVALID_COMMAND, tag)
        cmd = _decode(cmd_id, slot[offset + 1:offset + length])
        offset += length
        if cmd_id == _NEXT_NODE_HOP:
            if next_hop is not None:
                _fail(errors.ERR_DUPLICATE_NEXT_NODE, tag)
            next_hop = cmd
        elif cmd_id == _SURB_REPLY:
            if surb_reply is not None:
                _fail(errors.ERR_DUPLICATE_SURB_REPLY, tag)
            surb_reply = cmd
        commands.append(cmd)
    return commands, next_hop, surb_reply


def unwrap(private_key, packet):
    """Unwrap (the Sphinx Packet Format Specification): returns Unwrapped or raises SphinxError (with replay_tag after step 2)."""
    packet = bytes(packet)
    if len(packet) < g.HEADER_LENGTH:
        _fail(errors.ERR_TRUNCATED)
    if packet[: g.AD_LENGTH] != VERSION:
        _fail(errors.ERR_UNKNOWN_VERSION)
    alpha = packet[g.ALPHA_OFFSET : g.BETA_OFFSET]
    tag = sha512_256(alpha)
    k = kdf(x25519(private_key, alpha))
    if not hmac.compare_digest(mac(k["header_mac"], packet[: g.GAMMA_OFFSET]),
                               packet[g.GAMMA_OFFSET : g.HEADER_LENGTH]):
        _fail(errors.ERR_MAC_MISMATCH, tag)
    b = xor(packet[g.BETA_OFFSET : g.GAMMA_OFFSET] + bytes(P),
            stream(k["header_encryption"], k["header_encryption_iv"], R + P))
    slot, next_beta = b[:P], b[P:]
    commands, next_hop, surb_reply = _parse_slot(slot, tag)
    payload = packet[g.HEADER_LENGTH :]
    if payload:
        payload = sprp_decrypt(k["payload_encryption"], k["header_encryption_iv"], payload)
    if next_hop is not None:
        new_alpha = x25519(k["blinding_factor"], alpha)
        forwarded = VERSION + new_alpha + next_beta + next_hop.mac + payload
        return Unwrapped(forwarded, None, tag, commands)
    if len(payload) < g.PAYLOAD_TAG_LENGTH:
        _fail(errors.ERR_TRUNCATED_PAYLOAD, tag)
    if surb_reply is None:
        if not hmac.compare_digest(payload[: g.PAYLOAD_TAG_LENGTH], bytes(g.PAYLOAD_TAG_LENGTH)):
            _fail(errors.ERR_PAYLOAD_AUTH, tag)
        payload = payload[g.PAYLOAD_TAG_LENGTH :]
    return Unwrapped(None, payload, tag, commands)
