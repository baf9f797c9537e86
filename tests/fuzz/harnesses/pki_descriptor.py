"""Mix descriptors as a node uploads them and a document carries them (`pki.descriptor`).

Modes: raw bytes (`get_verifier_from_descriptor`, then `verify_and_parse_descriptor` with the key
it names, as a document's descriptors are read); a fuzzed JSON payload signed by the node's key,
so the fuzzer reaches the JSON decoder and `check_well_formed` behind a good signature (as the
authority reads an upload). Documented outcome: a `MixDescriptor` or `DescriptorError`; a parsed
descriptor encodes to JSON that decodes to the same descriptor."""
from katzenpost.pki import cert
from katzenpost.pki.descriptor import (DescriptorError, MixDescriptor, get_verifier_from_descriptor,
                                       verify_and_parse_descriptor)
from tests.fuzz.material import EPOCH, EXPIRATION, NODE_SEED, NOW, derive, ed25519_public

MAX_LEN = 4096
NODE_PUBLIC = ed25519_public(NODE_SEED)


def _round_trip(desc: MixDescriptor) -> None:
    again = MixDescriptor.from_json(desc.to_json())
    assert again == desc, f"descriptor JSON round trip: {again!r} != {desc!r}"


def _raw(data: bytes) -> None:
    try:
        verifier = get_verifier_from_descriptor(data, NOW)
        desc = verify_and_parse_descriptor(verifier, data, EPOCH, NOW)
    except DescriptorError:
        return
    _round_trip(desc)


def _signed(payload: bytes) -> None:
    if not payload:
        return  # a certificate cannot carry an empty payload
    raw = cert.sign(NODE_SEED, payload, EXPIRATION, now=NOW)
    try:
        desc = verify_and_parse_descriptor(NODE_PUBLIC, raw, EPOCH, NOW)
    except DescriptorError:
        return
    _round_trip(desc)


def TestOneInput(data: bytes) -> None:
    if data[:1] == b"\x00":
        _raw(data[1:])
    else:
        _signed(data[1:])


def sample_descriptors():
    link = derive("link key")
    mix_keys = {EPOCH + i: derive(f"mix key {i}") for i in range(3)}
    mix = MixDescriptor(name="mix1", identity_key=NODE_PUBLIC, link_key=link, mix_keys=mix_keys,
                        addresses={"tcp4": ["127.0.0.1:29483"], "tcp6": ["[::1]:29483"]})
    provider = MixDescriptor(name="provider1", identity_key=NODE_PUBLIC, link_key=link,
                             mix_keys=mix_keys, addresses={"tcp4": ["192.0.2.1:1234"]},
                             kaetzchen={"loop": {"endpoint": "+loop"},
                                        "keyserver": {"endpoint": "+keyserver", "x": "1"}},
                             registration_http_addresses=["http://127.0.0.1:8080"], layer=255)
    return {"mix": mix, "provider": provider}


def seeds():
    out = {}
    for name, desc in sample_descriptors().items():
        payload = desc.to_json()
        out[f"raw-{name}"] = b"\x00" + cert.sign(NODE_SEED, payload, EXPIRATION, now=NOW)
        out[f"signed-{name}"] = b"\x01" + payload
    return out
