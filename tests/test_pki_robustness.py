"""Key conversion vectors, and hostile bytes: whatever arrives, parsers raise their own error
class and nothing else (property tests), and the worker's loop runs on its own."""
import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _pki_fixtures import (
    AUTHORITY_SEED,
    MemoryMixKeys,
    make_document,
    node_self,
    public_for,
    seed_for,
    signed_document_bytes,
    wait_until,
)
from katzenpost.pki import cert
from katzenpost.pki.descriptor import DescriptorError, MixDescriptor, check_well_formed, verify_and_parse_descriptor
from katzenpost.pki.document import DocumentError, parse_document_payload, verify_and_parse_document
from katzenpost.pki.epochtime import EpochClock
from katzenpost.pki.keyconv import (
    KeyConversionError,
    x25519_private_from_ed25519_seed,
    x25519_public_from_ed25519_public,
)

NOW = 1_700_000_000
EPOCH = 123456
AUTHORITY = public_for(AUTHORITY_SEED)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- ToECDH --------------------------------------------------------------------------------

@pytest.mark.parametrize("seed,expected", [
    (bytes(range(1, 33)), "4a3807d064d077181cc070989e76891d20dca5559548dc2c77c1a50273882b38"),
    (bytes(range(0xC8, 0xE8)), "1dc8a2732109c536ecfde497e86acb649ffffb2160aac0a4c6e960e12f79ed04"),
])
def test_to_ecdh_vectors_of_the_spec(seed, expected):
    from _pki_fixtures import x25519_public
    assert x25519_public_from_ed25519_public(public_for(seed)).hex() == expected
    assert x25519_public(x25519_private_from_ed25519_seed(seed)).hex() == expected


def test_to_ecdh_private_scalar_is_clamped():
    scalar = x25519_private_from_ed25519_seed(bytes(32))
    assert scalar[0] & 7 == 0 and scalar[31] & 0x80 == 0 and scalar[31] & 0x40


@pytest.mark.parametrize("key", [b"\x01" + bytes(31), bytes(31), b"\xff" * 32])
def test_to_ecdh_rejects_unconvertible_keys(key):
    with pytest.raises(KeyConversionError):
        x25519_public_from_ed25519_public(key)


# --- hostile bytes -------------------------------------------------------------------------

@FAST
@given(st.binary(max_size=600))
def test_random_bytes_never_escape_the_certificate_error(raw):
    with pytest.raises(cert.CertificateError):
        cert.verify(AUTHORITY, raw, NOW)


@FAST
@given(st.binary(max_size=400))
def test_random_descriptor_payloads_are_descriptor_errors(payload):
    raw = cert.sign(seed_for("mix0"), payload or b"x", NOW + 100, now=NOW)
    with pytest.raises(DescriptorError):
        verify_and_parse_descriptor(public_for(seed_for("mix0")), raw, EPOCH, NOW)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@FAST
@given(st.dictionaries(st.sampled_from(["Version", "Name", "IdentityKey", "LinkKey", "MixKeys",
                                        "Addresses", "Kaetzchen", "Layer", "LoadWeight",
                                        "RegistrationHTTPAddresses"]), _json_values))
def test_structured_garbage_in_descriptor_fields_is_a_descriptor_error(fields):
    fields.setdefault("Version", "v0")
    payload = json.dumps(fields).encode()
    try:
        desc = MixDescriptor.from_json(payload)
        check_well_formed(desc, EPOCH)
    except (DescriptorError, ValueError) as exc:
        assert isinstance(exc, ValueError)  # CanonicalJSONError and DescriptorError only
        assert type(exc).__name__ in ("DescriptorError", "CanonicalJSONError")


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_mutated_documents_are_rejected_cleanly_or_carry_the_signed_payload(data):
    doc = make_document(EPOCH, NOW, layers=1, providers=1)
    raw = bytearray(signed_document_bytes(doc, NOW))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    try:
        parsed = verify_and_parse_document(bytes(raw), AUTHORITY, NOW)
    except DocumentError:
        return
    # The CBOR framing is not signed (e.g. a renamed key is ignored), but the payload is.
    assert parsed.to_json() == doc.to_json()


@FAST
@given(st.dictionaries(st.sampled_from(["Version", "Epoch", "GenesisEpoch", "Mu", "Topology",
                                        "Providers", "SharedRandomValue", "SharedRandomCommit",
                                        "PriorSharedRandom", "SendRatePerMinute"]), _json_values))
def test_structured_garbage_in_document_fields_is_a_document_error(fields):
    fields.setdefault("Version", "document-v0")
    with pytest.raises(DocumentError):
        parse_document_payload(json.dumps(fields).encode(), NOW)


def test_port_with_a_trailing_newline_is_rejected_like_go():
    from _pki_fixtures import make_descriptor
    with pytest.raises(DescriptorError, match="invalid port"):
        check_well_formed(make_descriptor("m", 1, addresses={"tcp4": ["1.2.3.4:80\n"]}), 1)


def test_huge_quoted_integer_is_rejected_not_crashing():
    payload = json.dumps({"Version": "v0", "Layer": "9" * 5000}).encode()
    with pytest.raises(ValueError, match="not an unsigned integer"):
        MixDescriptor.from_json(payload)


# --- the worker's own loop -------------------------------------------------------------------

def test_worker_loop_ticks_on_its_own_and_stops_cleanly():
    from test_pki_worker import FakeClient
    from katzenpost.pki.worker import PKIWorker

    async def scenario():
        client = FakeClient()
        worker = PKIWorker(node_self("mix1-0"), client, MemoryMixKeys("mix1-0"), EpochClock(period=12))
        worker.start()
        await wait_until(lambda: len(client.fetches) >= 3 and client.posts, "a tick", limit=6)
        task = worker._task
        await worker.stop()
        assert client.posts and client.fetches
        assert task.done() and worker._task is None  # really stopped, nothing left running
    asyncio.run(asyncio.wait_for(scenario(), 20))
