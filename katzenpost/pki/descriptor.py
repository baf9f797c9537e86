"""Mix descriptors (authority s11n/descriptor.go): JSON payload, signing, verification, rules.

The reference's exact serialization and `IsDescriptorWellFormed`. No I/O, no key files: callers
hand in keys and the time.
"""
from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass, field

from katzenpost.keys import decode_key_string
from katzenpost.pki import canonical_json as cj
from katzenpost.pki import cert
from katzenpost.pki.epochtime import DEFAULT_CLOCK, EpochClock
from katzenpost.rules import idna_lookup_to_ascii
from katzenpost.sphinx.geometry import NODE_ID_LENGTH, RECIPIENT_ID_LENGTH

DESCRIPTOR_VERSION = "v0"
LAYER_PROVIDER = 255
NODE_ID_LEN = NODE_ID_LENGTH  # Ed25519 identity public key; also the maximum Name length
KEY_LEN = 32
RECIPIENT_ID_LEN = RECIPIENT_ID_LENGTH  # maximum Kaetzchen endpoint length
MIX_KEYS_PER_DESCRIPTOR = 3  # keys for epochs [E, E+3)

TRANSPORT_TCP4 = "tcp4"
TRANSPORT_TCP6 = "tcp6"
TRANSPORT_TCP = "tcp"

_PORT = re.compile(r"[0-9]{1,10}")  # bounded so int() stays cheap


class DescriptorError(ValueError):
    """A descriptor that is malformed, badly signed or not well formed."""


@dataclass
class MixDescriptor:
    name: str
    identity_key: bytes
    link_key: bytes
    mix_keys: dict[int, bytes]
    addresses: dict[str, list[str]]
    kaetzchen: dict[str, dict] | None = None
    registration_http_addresses: list[str] | None = None
    layer: int = 0
    load_weight: int = 0
    # The signed certificate this descriptor came from (not part of the JSON).
    raw: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def is_provider(self) -> bool:
        return self.layer == LAYER_PROVIDER

    def to_json(self) -> bytes:
        """The Certified payload, byte for byte as the reference encodes it.

        A missing key (None or empty), mix-key map or address map is written `null`, as the
        reference writes its nil pointers and maps; such a descriptor is not well formed and
        `check_well_formed` says why.
        """
        fields = {
            "Version": DESCRIPTOR_VERSION,
            "Name": self.name or "",
            "IdentityKey": _key_or_null(self.identity_key),
            "LinkKey": _key_or_null(self.link_key),
            "MixKeys": (None if self.mix_keys is None
                        else {int(e): _key_or_null(k) for e, k in self.mix_keys.items()}),
            "Addresses": (None if self.addresses is None
                          else {t: None if a is None else list(a)
                                for t, a in self.addresses.items()}),
            "RegistrationHTTPAddresses": (None if self.registration_http_addresses is None
                                          else list(self.registration_http_addresses)),
            "Layer": self.layer,
            "LoadWeight": self.load_weight,
        }
        if self.kaetzchen:  # omitempty
            fields["Kaetzchen"] = self.kaetzchen
        return cj.dumps(fields)

    @classmethod
    def from_json(cls, payload: bytes) -> "MixDescriptor":
        """Decode the payload (unknown keys ignored, numbers quoted or plain); checks Version."""
        what = "descriptor"
        obj = cj.loads(payload, what)
        version = cj.get_string(obj, "Version", what)
        if version != DESCRIPTOR_VERSION:
            raise DescriptorError(f"descriptor: Invalid Descriptor Version: '{version:.40}'")
        return cls(
            name=cj.get_string(obj, "Name", what),
            identity_key=_key(obj, "IdentityKey"),
            link_key=_key(obj, "LinkKey"),
            mix_keys=_mix_keys(obj),
            addresses=_addresses(obj),
            kaetzchen=_kaetzchen(obj),
            registration_http_addresses=_string_list(obj, "RegistrationHTTPAddresses"),
            layer=cj.get_uint(obj, "Layer", what, bits=8),
            load_weight=cj.get_uint(obj, "LoadWeight", what, bits=8),
        )


def _key_or_null(key: bytes | None) -> bytes | None:
    return bytes(key) if key else None


# --- decoding helpers ------------------------------------------------------------------------

def _decode_key_text(value, what: str) -> bytes:
    """A public key as the reference's key types read JSON text: hex first, then base64."""
    if not isinstance(value, str):
        raise DescriptorError(f"{what}: expected a hex or base64 string")
    try:
        return decode_key_string(value)
    except ValueError:
        raise DescriptorError(f"{what}: key is neither hex nor base64") from None


def _key(obj: dict, key: str) -> bytes:
    raw = obj.get(key)
    if raw is None:
        return b""
    value = _decode_key_text(raw, f"descriptor: {key}")
    if len(value) != KEY_LEN:
        raise DescriptorError(f"descriptor: {key} must be {KEY_LEN} bytes, got {len(value)}")
    return value


def _mix_keys(obj: dict) -> dict[int, bytes]:
    raw = cj.get_map(obj, "MixKeys", "descriptor") or {}
    keys = {}
    for epoch_text, text in raw.items():
        epoch = cj.parse_uint_text(epoch_text, "descriptor: MixKeys epoch")
        key = _decode_key_text(text, f"descriptor: MixKeys[{epoch}]")
        if len(key) != KEY_LEN:
            raise DescriptorError(f"descriptor: MixKeys[{epoch}] must be {KEY_LEN} bytes")
        keys[epoch] = key
    return keys


def _string_list(obj: dict, key: str) -> list[str] | None:
    value = cj.get_list(obj, key, "descriptor")
    if value is None:
        return None
    if not all(isinstance(v, str) for v in value):
        raise DescriptorError(f"descriptor: {key} must be a list of strings")
    return value


def _addresses(obj: dict) -> dict[str, list[str]]:
    raw = cj.get_map(obj, "Addresses", "descriptor") or {}
    addresses = {}
    for transport, addrs in raw.items():
        if addrs is None:
            addrs = []
        if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
            raise DescriptorError(f"descriptor: Addresses['{transport}'] must be a list of strings")
        addresses[transport] = addrs
    return addresses


def _kaetzchen(obj: dict) -> dict[str, dict] | None:
    raw = cj.get_map(obj, "Kaetzchen", "descriptor")
    if raw is None:
        return None
    for capability, params in raw.items():
        if params is not None and not isinstance(params, dict):
            raise DescriptorError(f"descriptor: Kaetzchen['{capability}'] is not a map")
    return raw


# --- well-formedness (IsDescriptorWellFormed) ------------------------------------------------

def split_host_port(address: str) -> tuple[str, str]:
    """Go's net.SplitHostPort for the forms a descriptor may hold."""
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise DescriptorError("missing ']' in address")
        if address[end + 1:end + 2] != ":":
            raise DescriptorError("missing port in address")
        host, port = address[1:end], address[end + 2:]
        if "[" in host or "]" in port or "[" in port:
            raise DescriptorError("unexpected '[' or ']' in address")
        return host, port
    colon = address.rfind(":")
    if colon < 0:
        raise DescriptorError("missing port in address")
    host, port = address[:colon], address[colon + 1:]
    if ":" in host:
        raise DescriptorError("too many colons in address")
    if "[" in host or "]" in host:
        raise DescriptorError("unexpected '[' or ']' in address")
    return host, port


def ip_version(host: str) -> int:
    """4 or 6 like Go's net.ParseIP (an IPv4-mapped IPv6 address counts as 4)."""
    if "%" in host:
        raise DescriptorError("address is not an IP")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise DescriptorError("address is not an IP") from None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return 4
    return ip.version


def _check_address(transport: str, address: str, expected_ip_version: int) -> None:
    where = f"descriptor: Descriptor contains invalid address ['{transport}']'{address}'"
    try:
        host, port = split_host_port(address)
    except DescriptorError as exc:
        raise DescriptorError(f"{where}: {exc}") from None
    if not host:
        raise DescriptorError(where)
    if not _PORT.fullmatch(port) or int(port) > 65535:
        raise DescriptorError(f"{where}: invalid port")
    if int(port) == 0:
        raise DescriptorError(f"{where}: port is 0")
    if expected_ip_version:
        try:
            version = ip_version(host)
        except DescriptorError as exc:
            raise DescriptorError(f"{where}: {exc}") from None
        if version != expected_ip_version:
            raise DescriptorError(f"{where}: IP version mismatch")
        return
    try:
        idna_lookup_to_ascii(host)
    except ValueError as exc:
        raise DescriptorError(f"{where}: {exc}") from None


def _check_addresses(desc: MixDescriptor) -> None:
    if not desc.addresses:
        raise DescriptorError("descriptor: Descriptor missing Addresses")
    for transport, addrs in desc.addresses.items():
        if not addrs:
            raise DescriptorError(
                f"descriptor: Descriptor contains empty Address list for transport '{transport}'")
        if transport == "":
            raise DescriptorError("descriptor: Descriptor contains invalid Transport")
        expected = {TRANSPORT_TCP4: 4, TRANSPORT_TCP6: 6}.get(transport, 0)
        if not expected:
            if desc.layer != LAYER_PROVIDER:
                raise DescriptorError(
                    f"descriptor: Non-provider published Transport '{transport}'")
            if transport != TRANSPORT_TCP:
                continue  # unknown client transports are not validated
        for address in addrs:
            _check_address(transport, address, expected)
    if not desc.addresses.get(TRANSPORT_TCP4):
        raise DescriptorError("descriptor: Descriptor contains no TCPv4 addresses")


def validate_kaetzchen(kaetzchen: dict | None) -> None:
    if kaetzchen is None:
        return
    for capability, params in kaetzchen.items():
        if not capability:
            raise DescriptorError("capability length out of bounds")
        if params is None:
            raise DescriptorError(f"capability '{capability}' has no parameters")
        if "endpoint" not in params:
            raise DescriptorError(f"capability '{capability}' provided no endpoint")
        endpoint = params["endpoint"]
        if not isinstance(endpoint, str):
            raise DescriptorError(f"capability '{capability}' invalid endpoint type")
        if not 0 < len(endpoint.encode("utf-8", "surrogatepass")) <= RECIPIENT_ID_LEN:
            raise DescriptorError(
                f"capability '{capability}' invalid endpoint, length out of bounds")


def check_well_formed(desc: MixDescriptor, epoch: int) -> None:
    """IsDescriptorWellFormed: raise DescriptorError naming the first broken rule."""
    if not desc.name:
        raise DescriptorError("descriptor: Descriptor missing Name")
    if len(desc.name.encode("utf-8", "surrogatepass")) > NODE_ID_LEN:
        raise DescriptorError(f"descriptor: Descriptor Name '{desc.name:.64}' exceeds max length")
    if not desc.link_key or len(desc.link_key) != KEY_LEN:
        raise DescriptorError("descriptor: Descriptor missing LinkKey")
    if not desc.identity_key or len(desc.identity_key) != KEY_LEN:
        raise DescriptorError("descriptor: Descriptor missing IdentityKey")
    mix_keys = desc.mix_keys or {}
    if epoch not in mix_keys:
        raise DescriptorError(f"descriptor: Descriptor missing MixKey[{epoch}]")
    for key_epoch, key in mix_keys.items():
        if not epoch <= key_epoch < epoch + MIX_KEYS_PER_DESCRIPTOR:
            raise DescriptorError(
                f"descriptor: Descriptor contains MixKey for invalid epoch {key_epoch}")
        if not key or len(key) != KEY_LEN:
            raise DescriptorError(f"descriptor: MixKey[{key_epoch}] must be {KEY_LEN} bytes")
    _check_addresses(desc)
    if desc.layer == 0:
        if desc.kaetzchen is not None:
            raise DescriptorError("descriptor: Descriptor contains Kaetzchen when a mix")
    elif desc.layer == LAYER_PROVIDER:
        try:
            validate_kaetzchen(desc.kaetzchen)
        except DescriptorError as exc:
            raise DescriptorError(
                f"descriptor: Descriptor contains invalid Kaetzchen block: {exc}") from None
    else:
        raise DescriptorError(f"descriptor: Descriptor self-assigned Layer: '{desc.layer}'")


# --- signing and verification ----------------------------------------------------------------

def sign_descriptor(identity_private, desc: MixDescriptor, clock: EpochClock = DEFAULT_CLOCK,
                    now: float | None = None) -> bytes:
    """SignDescriptor: the JSON in a certificate expiring after the document lifetime."""
    current = time.time() if now is None else now
    expiration = int(current) + clock.document_lifetime()
    return cert.sign(identity_private, desc.to_json(), expiration, now=current)


def verify_and_parse_descriptor(verifier: bytes, raw: bytes, epoch: int,
                                now: float | None = None) -> MixDescriptor:
    """VerifyAndParseDescriptor: one signature by `verifier`, JSON, v0, well formed for epoch."""
    try:
        parsed = cert.parse(raw, now)
    except cert.CertificateError as exc:
        raise DescriptorError(f"descriptor: {exc}") from None
    if len(parsed.signatures) != 1:
        raise DescriptorError(f"descriptor: Expected 1 signature, got: {len(parsed.signatures)}")
    try:
        payload = cert.verify_parsed(bytes(verifier), parsed)
    except cert.CertificateError as exc:
        raise DescriptorError(f"descriptor: {exc}") from None
    try:
        desc = MixDescriptor.from_json(payload)
    except cj.CanonicalJSONError as exc:
        raise DescriptorError(str(exc)) from None
    check_well_formed(desc, epoch)
    desc.raw = bytes(raw)
    return desc


def get_verifier_from_descriptor(raw: bytes, now: float | None = None) -> bytes:
    """The IdentityKey of an unverified descriptor (to know whose signature to check)."""
    try:
        payload = cert.get_certified(raw, now)
        desc = MixDescriptor.from_json(payload)
    except (cert.CertificateError, cj.CanonicalJSONError) as exc:
        raise DescriptorError(f"descriptor: {exc}") from None
    if len(desc.identity_key) != KEY_LEN:
        raise DescriptorError("descriptor: Descriptor missing IdentityKey")
    return desc.identity_key
