"""Descriptors: Appendix A, the reference's JSON dialect, and IsDescriptorWellFormed rule by rule."""
import json

import pytest

from _pki_fixtures import APPENDIX_A_HEX, CLOCK, make_descriptor, public_for, seed_for, signed_descriptor
from katzenpost.pki import canonical_json as cj
from katzenpost.pki import cert
from katzenpost.pki.descriptor import (
    DescriptorError,
    MixDescriptor,
    check_well_formed,
    get_verifier_from_descriptor,
    sign_descriptor,
    verify_and_parse_descriptor,
)

APPENDIX_A = bytes.fromhex(APPENDIX_A_HEX)
APPENDIX_A_IDENTITY = bytes.fromhex("79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664")
APPENDIX_A_LINK = bytes.fromhex("7d9c24316539825c1896e57f28197746793ce60cbee3ad47da9d07b85fa55e2a")
EPOCH = 123456
NOW = 1_700_000_000


def test_appendix_a_verifies_for_its_epoch():
    desc = verify_and_parse_descriptor(APPENDIX_A_IDENTITY, APPENDIX_A, EPOCH)
    assert desc.name == "provider1" and desc.layer == 255 and desc.load_weight == 0
    assert desc.identity_key == APPENDIX_A_IDENTITY and desc.link_key == APPENDIX_A_LINK
    assert sorted(desc.mix_keys) == [123456, 123457, 123458]
    assert desc.addresses == {"tcp4": ["127.0.0.1:29483"]}
    assert desc.kaetzchen == {"loop": {"endpoint": "+loop"}}
    assert desc.registration_http_addresses is None


def test_appendix_a_reserializes_identically():
    desc = verify_and_parse_descriptor(APPENDIX_A_IDENTITY, APPENDIX_A, EPOCH)
    assert desc.to_json() == cert.parse(APPENDIX_A).certified
    assert cert.parse(APPENDIX_A).to_bytes() == APPENDIX_A
    # Re-signing the re-encoded JSON with the same key and expiration gives the same bytes.
    assert cert.sign(bytes(range(1, 33)), desc.to_json(), 18934214400) == APPENDIX_A


def test_appendix_a_is_not_valid_for_another_epoch():
    with pytest.raises(DescriptorError, match="MixKey"):
        verify_and_parse_descriptor(APPENDIX_A_IDENTITY, APPENDIX_A, EPOCH + 1)


def test_appendix_a_with_another_verifier_fails():
    with pytest.raises(DescriptorError):
        verify_and_parse_descriptor(bytes(32), APPENDIX_A, EPOCH)


def test_get_verifier_reads_the_unverified_identity():
    assert get_verifier_from_descriptor(APPENDIX_A) == APPENDIX_A_IDENTITY


def test_mix_descriptor_omits_kaetzchen_and_quotes_integers():
    text = make_descriptor("mix1", 10, port=5).to_json().decode()
    assert '"Kaetzchen"' not in text
    assert '"Layer":"0"' in text and '"LoadWeight":"0"' in text
    assert '"MixKeys":{"10":' in text and '"RegistrationHTTPAddresses":null' in text
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_mix_keys_sort_numerically_not_as_text():
    desc = make_descriptor("mix1", 9)
    text = desc.to_json().decode()
    assert text.index('"9":') < text.index('"10":') < text.index('"11":')


@pytest.mark.parametrize("text,expected", [
    ("a<b>&c", '"a\\u003cb\\u003e\\u0026c"'),
    ("\u2028\u2029", '"\\u2028\\u2029"'),
    ("\x7f", '"\x7f"'),
    ("\n\r\t\b\f\x01", '"\\n\\r\\t\\b\\f\\u0001"'),
    ('q"\\', '"q\\"\\\\"'),
    ("é", '"é"'),
])
def test_string_escaping_matches_the_reference_codec(text, expected):
    assert cj.quote_string(text) == expected


@pytest.mark.parametrize("value,expected", [
    (2.0, "2.0"), (0.0, "0.0"), (1.0, "1.0"), (0.00025, "0.00025"), (1e-07, "1e-07"),
    (1e21, "1e+21"), (1.5e-05, "0.000015"), (1e20, "100000000000000000000.0"), (-3.5, "-3.5"),
])
def test_float_format_matches_the_reference_codec(value, expected):
    assert cj.format_float(value) == expected


def test_kaetzchen_integer_params_are_quoted():
    desc = make_descriptor("p", 1, provider=True,
                           kaetzchen={"keyserver": {"endpoint": "+keyserver", "n": 7, "f": 2.0}})
    text = desc.to_json().decode()
    assert '"keyserver":{"endpoint":"+keyserver","f":2.0,"n":"7"}' in text


def test_decoder_accepts_plain_numbers_and_ignores_unknown_keys():
    obj = json.loads(make_descriptor("mix1", 5).to_json())
    obj["Layer"] = 0
    obj["LoadWeight"] = 0
    obj["SomethingNew"] = [1, 2]
    desc = MixDescriptor.from_json(json.dumps(obj).encode())
    check_well_formed(desc, 5)


def test_sign_and_verify_round_trip_with_document_lifetime():
    desc = make_descriptor("mix1", 77)
    raw = sign_descriptor(seed_for("mix1"), desc, CLOCK, NOW)
    assert cert.parse(raw, NOW).expiration == NOW + 3 * 1200 + 600
    parsed = verify_and_parse_descriptor(desc.identity_key, raw, 77, NOW)
    assert parsed == desc and parsed.raw == raw


def _rule_violations():
    yield "empty name", {"name": ""}, "missing Name"
    yield "name over 32 bytes", {"name": "x" * 33}, "exceeds max length"
    yield "no link key", {"link_key": b""}, "missing LinkKey"
    yield "no identity key", {"identity_key": b""}, "missing IdentityKey"
    yield "no key for the epoch", {"mix_keys": {11: b"k" * 32}}, r"missing MixKey\[10\]"
    yield "key too far ahead", {"mix_keys": {10: b"k" * 32, 13: b"k" * 32}}, "invalid epoch"
    yield "key in the past", {"mix_keys": {10: b"k" * 32, 9: b"k" * 32}}, "invalid epoch"
    yield "no addresses", {"addresses": {}}, "missing Addresses"
    yield "empty address list", {"addresses": {"tcp4": ["1.2.3.4:5"], "tcp6": []}}, "empty Address list"
    yield "no tcp4", {"addresses": {"tcp6": ["[::1]:5"]}}, "no TCPv4"
    yield "tcp4 with IPv6", {"addresses": {"tcp4": ["[::1]:5"]}}, "IP version mismatch"
    yield "tcp6 with IPv4", {"addresses": {"tcp4": ["1.2.3.4:5"], "tcp6": ["1.2.3.4:5"]}}, "IP version mismatch"
    yield "hostname in tcp4", {"addresses": {"tcp4": ["example.com:5"]}}, "not an IP"
    yield "port 0", {"addresses": {"tcp4": ["1.2.3.4:0"]}}, "port is 0"
    yield "port too big", {"addresses": {"tcp4": ["1.2.3.4:65536"]}}, "invalid port"
    yield "signed port", {"addresses": {"tcp4": ["1.2.3.4:+5"]}}, "invalid port"
    yield "no port", {"addresses": {"tcp4": ["1.2.3.4"]}}, "missing port"
    yield "empty host", {"addresses": {"tcp4": [":5"]}}, "invalid address"
    yield "mix with tcp transport", {"addresses": {"tcp4": ["1.2.3.4:5"], "tcp": ["a.b:5"]}}, "Non-provider"
    yield "mix with kaetzchen", {"kaetzchen": {"loop": {"endpoint": "+loop"}}}, "Kaetzchen when a mix"
    yield "self-assigned layer", {"layer": 1}, "self-assigned Layer"


@pytest.mark.parametrize("label,overrides,message", list(_rule_violations()),
                         ids=[v[0] for v in _rule_violations()])
def test_well_formed_rule(label, overrides, message):
    desc = make_descriptor("mix1", 10, **overrides)
    with pytest.raises(DescriptorError, match=message):
        check_well_formed(desc, 10)


def _provider_violations():
    yield "empty capability", {"": {"endpoint": "+x"}}, "capability length"
    yield "null params", {"loop": None}, "no parameters"
    yield "no endpoint", {"loop": {"x": "y"}}, "no endpoint"
    yield "endpoint not a string", {"loop": {"endpoint": 5}}, "endpoint type"
    yield "empty endpoint", {"loop": {"endpoint": ""}}, "length out of bounds"
    yield "endpoint over 64 bytes", {"loop": {"endpoint": "e" * 65}}, "length out of bounds"


@pytest.mark.parametrize("label,kaetzchen,message", list(_provider_violations()),
                         ids=[v[0] for v in _provider_violations()])
def test_provider_kaetzchen_rule(label, kaetzchen, message):
    desc = make_descriptor("p", 10, provider=True, kaetzchen=kaetzchen)
    with pytest.raises(DescriptorError, match=message):
        check_well_formed(desc, 10)


def test_provider_may_publish_tcp_and_unknown_transports():
    desc = make_descriptor("p", 10, provider=True, addresses={
        "tcp4": ["127.0.0.1:1"], "tcp6": ["[::1]:2"], "tcp": ["Example.com:3"],
        "torv2": ["anything goes"]})
    check_well_formed(desc, 10)
    bad = make_descriptor("p", 10, provider=True, addresses={
        "tcp4": ["127.0.0.1:1"], "tcp": ["bad_host:3"]})
    with pytest.raises(DescriptorError, match="invalid address"):
        check_well_formed(bad, 10)


def test_ipv4_mapped_ipv6_counts_as_ipv4_like_go():
    check_well_formed(make_descriptor("m", 1, addresses={"tcp4": ["[::ffff:1.2.3.4]:5"]}), 1)


def test_descriptor_with_two_signatures_is_rejected():
    desc = signed_descriptor("mix1", 10, NOW)
    doubled = cert.add_signature(seed_for("mix2"), desc.raw, NOW)
    with pytest.raises(DescriptorError, match="Expected 1 signature"):
        verify_and_parse_descriptor(desc.identity_key, doubled, 10, NOW)


def test_expired_descriptor_is_rejected():
    desc = signed_descriptor("mix1", 10, NOW)
    with pytest.raises(DescriptorError, match="expired"):
        verify_and_parse_descriptor(desc.identity_key, desc.raw, 10, NOW + 5 * 3600)


@pytest.mark.parametrize("payload,message", [
    (b"not json", "malformed JSON"),
    (b"[1,2]", "not an object"),
    (b'{"Version":"v1"}', "Invalid Descriptor Version"),
    (b'{"Version":"v0","IdentityKey":"!!"}', "neither hex nor base64"),
    (b'{"Version":"v0","IdentityKey":"AAAA"}', "must be 32 bytes"),
    (b'{"Version":"v0","Layer":"256"}', "does not fit"),
    (b'{"Version":"v0","Layer":"-1"}', "not an unsigned integer"),
    (b'{"Version":"v0","MixKeys":{"x":"AAAA"}}', "not a uint64"),
    (b'{"Version":"v0","Addresses":{"tcp4":"1.2.3.4:5"}}', "list of strings"),
    (b'{"Version":"v0","Kaetzchen":[1]}', "not a map"),
    (b'{"Version":"v0","Layer":NaN}', "not valid JSON"),
    (b"\xff\xfe", "malformed JSON"),
    (b"[" * 100000, "malformed JSON"),
])
def test_malformed_payload_is_rejected_with_a_reason(payload, message):
    raw = cert.sign(seed_for("mix1"), payload, NOW + 100, now=NOW)
    with pytest.raises(DescriptorError, match=message):
        verify_and_parse_descriptor(make_descriptor("mix1", 1).identity_key, raw, 1, NOW)


def test_unsigned_and_oversized_descriptors_are_rejected_with_a_reason():
    desc = make_descriptor("mix1", 10)
    unsigned = cert.Certificate(0, NOW + 100, "ed25519", desc.to_json()).to_bytes()
    with pytest.raises(DescriptorError, match="Expected 1 signature, got: 0"):
        verify_and_parse_descriptor(desc.identity_key, unsigned, 10, NOW)
    oversized = cert.Certificate(0, NOW + 100, "ed25519", b" " * cert.MAX_CERT_SIZE).to_bytes()
    with pytest.raises(DescriptorError, match="exceeds"):
        verify_and_parse_descriptor(desc.identity_key, oversized, 10, NOW)


# --- what Go nodes sign and post (trailing data, hex keys, missing fields) -------------------

def _payload_signed_by(name: str, payload: bytes) -> bytes:
    return cert.sign(seed_for(name), payload, NOW + 3600, now=NOW)


@pytest.mark.parametrize("trailer", [b' {"Name":"other"}', b"\n", b" garbage \xff\xfe", b"]"])
def test_trailing_data_after_the_payload_object_is_ignored_like_the_reference(trailer):
    desc = make_descriptor("mix1", EPOCH)
    raw = _payload_signed_by("mix1", desc.to_json() + trailer)
    parsed = verify_and_parse_descriptor(desc.identity_key, raw, EPOCH, NOW)
    assert parsed.name == "mix1" and parsed.mix_keys == desc.mix_keys and parsed.raw == raw


@pytest.mark.parametrize("payload", [b'{"Version":"v0","Name":"\xff"}', b'["v0"]', b"  ", b"{"])
def test_the_object_itself_must_still_be_valid(payload):
    with pytest.raises(DescriptorError):
        verify_and_parse_descriptor(public_for(seed_for("mix1")),
                                    _payload_signed_by("mix1", payload), EPOCH, NOW)


def test_key_fields_are_read_hex_first_then_base64_like_the_reference():
    desc = make_descriptor("mix1", EPOCH)
    obj = json.loads(desc.to_json())
    obj["IdentityKey"] = desc.identity_key.hex()
    obj["LinkKey"] = desc.link_key.hex().upper()
    obj["MixKeys"][str(EPOCH)] = desc.mix_keys[EPOCH].hex()
    raw = _payload_signed_by("mix1", json.dumps(obj).encode())
    parsed = verify_and_parse_descriptor(desc.identity_key, raw, EPOCH, NOW)
    assert (parsed.identity_key, parsed.link_key) == (desc.identity_key, desc.link_key)
    assert parsed.mix_keys == desc.mix_keys  # the other two stayed base64


@pytest.mark.parametrize("field, value", [("LinkKey", "ab" * 31), ("LinkKey", "not a key!"),
                                          ("IdentityKey", 7), ("LinkKey", "")])
def test_a_key_of_the_wrong_length_or_form_is_refused(field, value):
    desc = make_descriptor("mix1", EPOCH)
    obj = json.loads(desc.to_json())
    obj[field] = value
    with pytest.raises(DescriptorError):
        verify_and_parse_descriptor(desc.identity_key,
                                    _payload_signed_by("mix1", json.dumps(obj).encode()), EPOCH, NOW)


@pytest.mark.parametrize("missing", [dict(link_key=None), dict(identity_key=None),
                                     dict(mix_keys=None), dict(addresses=None),
                                     dict(link_key=b""), dict(mix_keys={}), dict(addresses={})])
def test_a_descriptor_lacking_keys_or_addresses_signs_with_null_like_the_reference(missing):
    desc = make_descriptor("mix1", EPOCH, **missing)
    field = {"link_key": "LinkKey", "identity_key": "IdentityKey", "mix_keys": "MixKeys",
             "addresses": "Addresses"}[next(iter(missing))]
    raw = sign_descriptor(seed_for("mix1"), desc, CLOCK, NOW)  # no crash
    obj = json.loads(cert.parse(raw, NOW).certified)
    if missing[next(iter(missing))] is None or field.endswith("Key"):
        assert obj[field] is None
    with pytest.raises(DescriptorError, match="missing|Missing"):
        check_well_formed(desc, EPOCH)
    with pytest.raises(DescriptorError):
        verify_and_parse_descriptor(public_for(seed_for("mix1")), raw, EPOCH, NOW)
