"""PKI documents as the node's PKI client receives them (`pki.document`).

Modes: raw bytes into `verify_and_parse_document`; a fuzzed JSON payload signed by the
authority's key (the fuzzer reaches the document decoder, the shared-random checks and the
embedded, separately signed descriptors). Documented outcome: a `Document` or `DocumentError`; a
parsed document encodes to JSON that parses to the same document."""
from katzenpost.pki import cert
from katzenpost.pki.descriptor import MixDescriptor
from katzenpost.pki.document import (Document, DocumentError, parse_document_payload,
                                     verify_and_parse_document)
from tests.fuzz.material import (AUTHORITY_SEED, EPOCH, EXPIRATION, NOW, certificate_input,
                                 derive, ed25519_public)

MAX_LEN = 16384
AUTHORITY_PUBLIC = ed25519_public(AUTHORITY_SEED)


def _round_trip(doc: Document) -> None:
    again = parse_document_payload(doc.to_json(), NOW)
    assert again == doc, "document JSON round trip differs"


def TestOneInput(data: bytes) -> None:
    raw = certificate_input(data, AUTHORITY_SEED)
    if raw is None:
        return
    try:
        doc = verify_and_parse_document(raw, AUTHORITY_PUBLIC, NOW)
    except DocumentError:
        return
    _round_trip(doc)


def sample_descriptor(name: str, layer: int) -> MixDescriptor:
    seed = derive(f"document node {name}")
    public = ed25519_public(seed)
    desc = MixDescriptor(name=name, identity_key=public, link_key=derive(f"link {name}"),
                         mix_keys={EPOCH + i: derive(f"mix {name} {i}") for i in range(3)},
                         addresses={"tcp4": ["127.0.0.1:30000"]}, layer=layer,
                         kaetzchen={"loop": {"endpoint": "+loop"}} if layer == 255 else None)
    desc.raw = cert.sign(seed, desc.to_json(), EXPIRATION, now=NOW)
    return desc


def sample_document(**overrides) -> Document:
    fields = dict(epoch=EPOCH, genesis_epoch=EPOCH, send_rate_per_minute=100, mu=0.001,
                  mu_max_delay=90000, lambda_p=0.0001234, lambda_p_max_delay=30000,
                  lambda_l=0.00025, lambda_l_max_delay=46051, lambda_d=0.00025,
                  lambda_d_max_delay=46051, lambda_m=0.00025, lambda_m_max_delay=46051,
                  topology=[[sample_descriptor(f"mix{i}", 0)] for i in range(3)],
                  providers=[sample_descriptor("provider1", 255)],
                  shared_random_value=derive("srv"), prior_shared_random=[derive("prior")])
    fields.update(overrides)
    return Document(**fields)


def seeds():
    doc = sample_document()
    payload = doc.to_json()
    commit = EPOCH.to_bytes(8, "big") + derive("commit")
    vote = sample_document(shared_random_value=b"", shared_random_commit=commit)
    return {"raw": b"\x00" + cert.sign(AUTHORITY_SEED, payload, EXPIRATION, now=NOW),
            "signed": b"\x01" + payload, "signed-commit": b"\x01" + vote.to_json()}
