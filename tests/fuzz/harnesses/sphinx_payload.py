"""SURB reply payloads and their keys into `sphinx.decrypt_surb_payload`, and AEZ itself (the
Sphinx SPRP, in the compiled core) with inputs of every length.

Documented outcome: plaintext or `SphinxError` for SURB payloads; for AEZ, `decrypt` returns
None or a plaintext that `encrypt` turns back into the same ciphertext (AEZ is deterministic), and
with tau = 0 (the SPRP) every ciphertext decrypts."""
from katzenpost import sphinx
from katzenpost.sphinx import aez
from katzenpost.sphinx import geometry as g
from tests.fuzz.data import Reader
from tests.fuzz.material import counter_stream, derive

MAX_LEN = 4096


def _surb(r: Reader) -> None:
    keys = r.exact(g.SPRP_KEY_MATERIAL_LENGTH * (r.choice(g.NR_HOPS + 1)))
    payload = r.rest()
    try:
        plaintext = sphinx.decrypt_surb_payload(payload, keys)
    except sphinx.SphinxError:
        return
    assert len(plaintext) == len(payload) - g.PAYLOAD_TAG_LENGTH


def _aez(r: Reader) -> None:
    key = r.take(r.choice(80))
    nonce = r.take(r.choice(24))
    ad = [r.take(r.choice(40)) for _ in range(r.choice(4))]
    tau = r.choice(33)
    ct = r.rest()
    plaintext = aez.decrypt(key, nonce, ad, tau, ct)
    if tau == 0:
        assert plaintext is not None, "the SPRP (tau = 0) refused a ciphertext"
    if plaintext is None:
        return
    assert len(plaintext) == len(ct) - tau
    assert aez.encrypt(key, nonce, ad, tau, plaintext) == ct, "AEZ decrypt/encrypt round trip"


def TestOneInput(data: bytes) -> None:
    r = Reader(data)
    (_surb if r.byte() & 1 == 0 else _aez)(r)


def _through_hops(packet, private_keys):
    """The payload a client receives: the reply unwrapped at every hop of its SURB."""
    for private in private_keys:
        out = sphinx.unwrap(private, packet)
        packet = out.packet if out.packet is not None else None
        payload = out.payload
    return payload


def seeds():
    privates = [derive(f"key {i}") for i in range(3)]
    path = [sphinx.PathHop(derive(f"hop {i}"), sphinx.public_key(privates[i]),
                           [sphinx.SURBReply(derive("surb id", 16))] if i == 2 else [])
            for i in range(3)]
    surb, keys = sphinx.new_surb(path, counter_stream("surb"), counter_stream("filler"))
    reply, _ = sphinx.new_packet_from_surb(surb, derive("reply", 256))
    payload = _through_hops(reply, privates)
    assert sphinx.decrypt_surb_payload(payload, keys) == derive("reply", 256)
    n_keys = len(keys) // g.SPRP_KEY_MATERIAL_LENGTH
    key, nonce, msg = derive("aez key", 48), derive("aez nonce", 16), derive("aez msg", 100)
    ad = b"\0" * 5
    # Layout of an AEZ input: mode, key length, key, nonce length, nonce, AD count, (AD length,
    # AD)..., tau, ciphertext.
    return {
        "surb-reply": bytes([0, n_keys]) + keys + payload,
        "surb-short": bytes([0, 1]) + derive("k", 64) + b"short",
        "aez-sprp": bytes([1, 48]) + key + bytes([16]) + nonce + bytes([0, 0])
                    + aez.encrypt(key, nonce, [], 0, msg),
        "aez-tag": bytes([1, 48]) + key + bytes([16]) + nonce + bytes([1, 5]) + ad + bytes([16])
                   + aez.encrypt(key, nonce, [ad], 16, msg),
    }
