"""Documents: serialization, VerifyAndParseDocument in order, and IsDocumentWellFormed."""
import json

import pytest

from _pki_fixtures import (
    AUTHORITY_SEED,
    APPENDIX_A_HEX,
    make_document,
    public_for,
    seed_for,
    signed_descriptor,
    signed_document_bytes,
)
from katzenpost.pki import cert
from katzenpost.pki.descriptor import verify_and_parse_descriptor
from katzenpost.pki.document import (
    DocumentError,
    parse_document_payload,
    verify_and_parse_document,
)

NOW = 1_700_000_000
EPOCH = 123456
AUTHORITY = public_for(AUTHORITY_SEED)


def _verify(doc, now=NOW):
    return verify_and_parse_document(signed_document_bytes(doc, now), AUTHORITY, now)


def test_round_trip_keeps_every_field():
    doc = make_document(EPOCH, NOW)
    parsed = _verify(doc)
    for name in ("epoch", "genesis_epoch", "send_rate_per_minute", "mu", "mu_max_delay",
                 "lambda_p", "lambda_p_max_delay", "lambda_m_max_delay", "shared_random_value",
                 "prior_shared_random"):
        assert getattr(parsed, name) == getattr(doc, name)
    assert [[d.name for d in layer] for layer in parsed.topology] == [["mix0-0"], ["mix1-0"], ["mix2-0"]]
    assert [d.name for d in parsed.providers] == ["provider1", "provider2"]
    assert parsed.to_json() == doc.to_json()


def test_parser_assigns_each_mix_its_layer_index():
    parsed = _verify(make_document(EPOCH, NOW, per_layer=2))
    assert [[d.layer for d in layer] for layer in parsed.topology] == [[0, 0], [1, 1], [2, 2]]
    assert all(p.layer == 255 for p in parsed.providers)


def test_json_shape_matches_the_reference():
    doc = make_document(EPOCH, NOW)
    text = doc.to_json().decode()
    obj = json.loads(text)
    assert list(obj) == sorted(obj)
    assert obj["Epoch"] == "123456" and obj["Version"] == "document-v0"
    assert obj["SharedRandomCommit"] is None and '"Mu":0.001,' in text
    assert '"LambdaP":0.0001234,' in text and '"MuMaxDelay":"90000"' in text
    assert len(obj["Topology"]) == 3 and len(obj["Providers"]) == 2


def test_document_with_the_appendix_a_provider():
    provider = verify_and_parse_descriptor(
        bytes.fromhex("79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664"),
        bytes.fromhex(APPENDIX_A_HEX), EPOCH)
    doc = make_document(EPOCH, NOW, layers=1, providers=0)
    doc.providers = [provider]
    parsed = _verify(doc)
    assert parsed.providers[0].raw == bytes.fromhex(APPENDIX_A_HEX)


def test_wrong_authority_key_is_rejected():
    raw = signed_document_bytes(make_document(EPOCH, NOW), NOW)
    with pytest.raises(DocumentError, match="no signature"):
        verify_and_parse_document(raw, public_for(seed_for("other")), NOW)


def test_expired_document_is_rejected():
    raw = signed_document_bytes(make_document(EPOCH, NOW), NOW)
    with pytest.raises(DocumentError, match="expired"):
        verify_and_parse_document(raw, AUTHORITY, NOW + 3 * 1200 + 601)


def test_document_signed_by_a_node_instead_of_the_authority_is_rejected():
    raw = signed_document_bytes(make_document(EPOCH, NOW), NOW, seed=seed_for("mix0-0"))
    with pytest.raises(DocumentError):
        verify_and_parse_document(raw, AUTHORITY, NOW)


def _payload(doc, **changes):
    obj = json.loads(doc.to_json())
    obj.update(changes)
    return json.dumps(obj).encode()


@pytest.mark.parametrize("changes,message", [
    ({"Version": "document-v1"}, "Invalid Document Version"),
    ({"SharedRandomValue": "AAAA"}, "SharedRandomValue"),
    ({"SharedRandomCommit": "AAAA"}, "SharedRandomCommit"),
    ({"SharedRandomValue": None, "SharedRandomCommit": None}, "SharedRandomValue"),
    ({"GenesisEpoch": "0"}, "GenesisEpoch"),
    ({"GenesisEpoch": "1", "PriorSharedRandom": None}, "PriorSharedRandom"),
    ({"Topology": []}, "no Topology"),
    ({"Topology": [[]]}, "layer 0 contains no nodes"),
    ({"Providers": []}, "no Providers"),
    ({"Epoch": "123457"}, r"MixKey\[123457\]|invalid epoch"),
    ({"Topology": [["AAAA"]]}, "Topology"),
    ({"Topology": "x"}, "not a list"),
    ({"Mu": "fast"}, "not a finite number"),
])
def test_validation_rule(changes, message):
    with pytest.raises(DocumentError, match=message):
        parse_document_payload(_payload(make_document(EPOCH, NOW), **changes), NOW)


def test_src_epoch_must_match_when_present():
    doc = make_document(EPOCH, NOW, shared_random_value=b"",
                         shared_random_commit=(EPOCH + 1).to_bytes(8, "big") + bytes(32))
    with pytest.raises(DocumentError, match="does not match the Epoch"):
        parse_document_payload(doc.to_json(), NOW)
    doc.shared_random_commit = EPOCH.to_bytes(8, "big") + bytes(32)
    parse_document_payload(doc.to_json(), NOW)  # a vote-style document is acceptable


def test_provider_in_the_providers_list_must_have_layer_255():
    doc = make_document(EPOCH, NOW)
    doc.providers.append(signed_descriptor("mixX", EPOCH, NOW))
    with pytest.raises(DocumentError, match="as a Provider with layer 0"):
        parse_document_payload(doc.to_json(), NOW)


def test_the_same_identity_twice_is_rejected():
    doc = make_document(EPOCH, NOW)
    doc.topology[2].append(doc.topology[0][0])
    with pytest.raises(DocumentError, match="multiple entries"):
        parse_document_payload(doc.to_json(), NOW)


def test_one_bad_descriptor_rejects_the_whole_document():
    doc = make_document(EPOCH, NOW)
    tampered = cert.parse(doc.topology[1][0].raw, NOW)
    tampered.certified = tampered.certified.replace(b"127.0.0.1", b"127.0.0.2")
    doc.topology[1][0].raw = tampered.to_bytes()
    with pytest.raises(DocumentError, match=r"Topology\[1\]\[0\].*signature"):
        parse_document_payload(doc.to_json(), NOW)


def test_garbage_document_bytes_are_rejected():
    for raw in (b"", b"\x00" * 50, b"\xa5garbage", cert.sign(AUTHORITY_SEED, b"{}", NOW + 5, now=NOW)):
        with pytest.raises(DocumentError):
            verify_and_parse_document(raw, AUTHORITY, NOW)


def test_top_level_shape_equals_the_reference_sample():
    import re
    doc = make_document(EPOCH, NOW, layers=1, providers=1)
    text = re.sub(r'"[A-Za-z0-9+/]{40,}={0,2}"', '"<b64>"', doc.to_json().decode())
    assert text == (
        '{"Epoch":"123456","GenesisEpoch":"123456","LambdaD":0.00025,"LambdaDMaxDelay":"46051",'
        '"LambdaL":0.00025,"LambdaLMaxDelay":"46051","LambdaM":0.00025,"LambdaMMaxDelay":"46051",'
        '"LambdaP":0.0001234,"LambdaPMaxDelay":"30000","Mu":0.001,"MuMaxDelay":"90000",'
        '"PriorSharedRandom":["<b64>","<b64>"],"Providers":["<b64>"],'
        '"SendRatePerMinute":"100","SharedRandomCommit":null,"SharedRandomValue":"<b64>",'
        '"Topology":[["<b64>"]],"Version":"document-v0"}')


def test_unsigned_and_oversized_documents_are_rejected_with_a_reason():
    payload = make_document(EPOCH, NOW).to_json()
    unsigned = cert.Certificate(0, NOW + 100, "ed25519", payload).to_bytes()
    with pytest.raises(DocumentError, match="no signature by the expected identity"):
        verify_and_parse_document(unsigned, AUTHORITY, NOW)
    oversized = cert.Certificate(0, NOW + 100, "ed25519", b" " * cert.MAX_CERT_SIZE).to_bytes()
    with pytest.raises(DocumentError, match="exceeds"):
        verify_and_parse_document(oversized, AUTHORITY, NOW)
