"""PKI documents (authority s11n/document.go): JSON payload, signing, verification, rules.

The reference's exact serialization and `VerifyAndParseDocument` in its order. No I/O; the
authority builds documents, the node's PKI client verifies them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from katzenpost.pki import canonical_json as cj
from katzenpost.pki import cert
from katzenpost.pki.descriptor import (
    LAYER_PROVIDER,
    DescriptorError,
    MixDescriptor,
    get_verifier_from_descriptor,
    verify_and_parse_descriptor,
)
from katzenpost.pki.epochtime import DEFAULT_CLOCK, EpochClock

DOCUMENT_VERSION = "document-v0"
SHARED_RANDOM_VALUE_LEN = 32
SHARED_RANDOM_COMMIT_LEN = 40  # BE64 epoch || SHA3-256(reveal), votes only

_UINT_FIELDS = (
    ("Epoch", "epoch"), ("GenesisEpoch", "genesis_epoch"),
    ("SendRatePerMinute", "send_rate_per_minute"), ("MuMaxDelay", "mu_max_delay"),
    ("LambdaPMaxDelay", "lambda_p_max_delay"), ("LambdaLMaxDelay", "lambda_l_max_delay"),
    ("LambdaDMaxDelay", "lambda_d_max_delay"), ("LambdaMMaxDelay", "lambda_m_max_delay"),
)
_FLOAT_FIELDS = (("Mu", "mu"), ("LambdaP", "lambda_p"), ("LambdaL", "lambda_l"),
                 ("LambdaD", "lambda_d"), ("LambdaM", "lambda_m"))


class DocumentError(ValueError):
    """A document that is malformed, badly signed or not well formed."""


@dataclass
class Document:
    epoch: int
    genesis_epoch: int
    send_rate_per_minute: int
    mu: float
    mu_max_delay: int
    lambda_p: float
    lambda_p_max_delay: int
    lambda_l: float
    lambda_l_max_delay: int
    lambda_d: float
    lambda_d_max_delay: int
    lambda_m: float
    lambda_m_max_delay: int
    topology: list[list[MixDescriptor]]
    providers: list[MixDescriptor]
    shared_random_value: bytes
    # None is written `null` (a voting authority's vote after its process start), [] as `[]`.
    prior_shared_random: list[bytes] | None
    shared_random_commit: bytes | None = None
    raw: bytes | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> bytes:
        fields = {json_key: getattr(self, attr) for json_key, attr in _UINT_FIELDS}
        fields.update({json_key: float(getattr(self, attr)) for json_key, attr in _FLOAT_FIELDS})
        fields.update({
            "Version": DOCUMENT_VERSION,
            "Topology": [[_raw_of(d) for d in layer] for layer in self.topology],
            "Providers": [_raw_of(d) for d in self.providers],
            "SharedRandomCommit": self.shared_random_commit,
            "SharedRandomValue": self.shared_random_value,
            "PriorSharedRandom": (None if self.prior_shared_random is None
                                  else list(self.prior_shared_random)),
        })
        return cj.dumps(fields)

    def all_nodes(self) -> list[MixDescriptor]:
        return [d for layer in self.topology for d in layer] + list(self.providers)

    def node_by_identity(self, identity_key: bytes) -> MixDescriptor | None:
        for desc in self.all_nodes():
            if desc.identity_key == identity_key:
                return desc
        return None


def _raw_of(desc: MixDescriptor) -> bytes:
    if desc.raw is None:
        raise DocumentError(f"document: descriptor of '{desc.name}' has no signed form")
    return desc.raw


# --- decoding --------------------------------------------------------------------------------

def _raw_list(value, what: str) -> list[bytes]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DocumentError(f"document: {what} is not a list")
    return [cj.decode_b64(item, f"document: {what}[{i}]") for i, item in enumerate(value)]


def _decode_payload(payload: bytes) -> tuple[dict, dict]:
    """(scalar fields, raw blobs) of the JSON, before descriptors are verified."""
    what = "document"
    obj = cj.loads(payload, what)
    version = cj.get_string(obj, "Version", what)
    if version != DOCUMENT_VERSION:
        raise DocumentError(f"document: Invalid Document Version: '{version:.40}'")
    scalars = {attr: cj.get_uint(obj, key, what) for key, attr in _UINT_FIELDS}
    scalars.update({attr: cj.get_float(obj, key, what) for key, attr in _FLOAT_FIELDS})
    topology = cj.get_list(obj, "Topology", what) or []
    blobs = {
        "topology": [_raw_list(layer, f"Topology[{i}]") for i, layer in enumerate(topology)],
        "providers": _raw_list(cj.get_list(obj, "Providers", what), "Providers"),
        "src": cj.get_bytes(obj, "SharedRandomCommit", what) or b"",
        "srv": cj.get_bytes(obj, "SharedRandomValue", what) or b"",
        "prior": _raw_list(cj.get_list(obj, "PriorSharedRandom", what), "PriorSharedRandom"),
    }
    return scalars, blobs


def _check_shared_random(epoch: int, genesis: int, blobs: dict) -> None:
    src, srv = blobs["src"], blobs["srv"]
    if len(src) == SHARED_RANDOM_COMMIT_LEN and int.from_bytes(src[:8], "big") != epoch:
        raise DocumentError("document: Document SharedRandomCommit does not match the Epoch")
    if len(srv) != SHARED_RANDOM_VALUE_LEN and not (len(srv) == 0
                                                    and len(src) == SHARED_RANDOM_COMMIT_LEN):
        raise DocumentError("document: Document has invalid SharedRandomValue")
    if len(src) != SHARED_RANDOM_COMMIT_LEN and not (len(src) == 0
                                                     and len(srv) == SHARED_RANDOM_VALUE_LEN):
        raise DocumentError("document: Document has invalid SharedRandomCommit")
    if genesis == 0:
        raise DocumentError("document: Document has invalid GenesisEpoch")
    if not blobs["prior"] and genesis != epoch:
        raise DocumentError("document: Document has empty PriorSharedRandom")


def _parse_descriptor(raw: bytes, epoch: int, now: float | None, where: str) -> MixDescriptor:
    try:
        verifier = get_verifier_from_descriptor(raw, now)
        return verify_and_parse_descriptor(verifier, raw, epoch, now)
    except DescriptorError as exc:
        raise DocumentError(f"document: {where}: {exc}") from None


def check_well_formed(doc: Document) -> None:
    """IsDocumentWellFormed."""
    if not doc.topology:
        raise DocumentError("document: Document contains no Topology")
    seen: set[bytes] = set()
    for index, layer in enumerate(doc.topology):
        if not layer:
            raise DocumentError(f"document: Document Topology layer {index} contains no nodes")
    if not doc.providers:
        raise DocumentError("document: Document contains no Providers")
    for desc in doc.providers:
        if desc.layer != LAYER_PROVIDER:
            raise DocumentError(
                f"document: Document lists '{desc.name}' as a Provider with layer {desc.layer}")
    for desc in doc.all_nodes():
        if desc.identity_key in seen:
            raise DocumentError(
                f"document: Document contains multiple entries for {desc.identity_key.hex()}")
        seen.add(desc.identity_key)


def parse_document_payload(payload: bytes, now: float | None = None) -> Document:
    """Steps 2-9 of VerifyAndParseDocument on an already verified payload."""
    try:
        scalars, blobs = _decode_payload(payload)
    except cj.CanonicalJSONError as exc:
        raise DocumentError(str(exc)) from None
    epoch = scalars["epoch"]
    _check_shared_random(epoch, scalars["genesis_epoch"], blobs)
    topology = [[_parse_descriptor(raw, epoch, now, f"Topology[{i}][{j}]")
                 for j, raw in enumerate(layer)] for i, layer in enumerate(blobs["topology"])]
    providers = [_parse_descriptor(raw, epoch, now, f"Providers[{i}]")
                 for i, raw in enumerate(blobs["providers"])]
    doc = Document(topology=topology, providers=providers,
                   shared_random_value=blobs["srv"], prior_shared_random=blobs["prior"],
                   shared_random_commit=blobs["src"] or None, **scalars)
    check_well_formed(doc)
    for index, layer in enumerate(doc.topology):
        for desc in layer:
            desc.layer = index  # the parser assigns each mix its topology index
    return doc


def verify_and_parse_document(raw: bytes, verifier: bytes, now: float | None = None) -> Document:
    """VerifyAndParseDocument for a non-voting authority's identity key."""
    try:
        payload = cert.verify(bytes(verifier), raw, now)
    except cert.CertificateError as exc:
        raise DocumentError(f"document: {exc}") from None
    doc = parse_document_payload(payload, now)
    doc.raw = bytes(raw)
    return doc


def sign_document(signing_key, doc: Document, clock: EpochClock = DEFAULT_CLOCK,
                  now: float | None = None) -> bytes:
    """SignDocument: the JSON in a certificate expiring after the document lifetime."""
    current = time.time() if now is None else now
    expiration = int(current) + clock.document_lifetime()
    return cert.sign(signing_key, doc.to_json(), expiration, now=current)
