"""The JSON dialect of the reference's descriptors and documents (ugorji codec v1.1.7).

Canonical (sorted keys), every integer as a quoted decimal string, bytes as padded base64,
Go-style string escaping and float formatting. Encoding and typed field access only: the
rules of descriptors and documents live in their own modules.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
from decimal import Decimal

MAX_UINT64 = 2**64 - 1
_HEX = "0123456789abcdef"
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\b": "\\b",
                  "\f": "\\f", "\t": "\\t"}
# At most 20 digits: enough for any uint64, and int() of a longer string is never attempted.
_DIGITS = re.compile(r"[0-9]{1,20}")


class CanonicalJSONError(ValueError):
    """A payload that is not valid JSON, or a field of the wrong type."""


# --- encoding --------------------------------------------------------------------------------

def quote_string(text: str) -> str:
    """Go's HTML-safe JSON quoting as ugorji writes it (<, >, & and U+2028/9 escaped)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif code < 0x20 or ch in "<>&":
            out.append("\\u00" + _HEX[code >> 4] + _HEX[code & 0xF])
        elif ch in "\u2028\u2029":
            out.append("\\u202" + _HEX[code & 0xF])
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")  # a lone surrogate is invalid UTF-8 in Go
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _fixed_notation(value: float) -> str:
    """Shortest round-trip digits written without an exponent (Go 'f', precision -1)."""
    text = format(Decimal(repr(value)), "f")
    return text


def format_float(value: float) -> str:
    """ugorji's float64 format: 0/1 as "0.0"/"1.0", exponent form outside [1e-6, 1e21)."""
    if math.isnan(value) or math.isinf(value):
        raise CanonicalJSONError(f"canonical_json: cannot encode non-finite float {value!r}")
    magnitude = abs(value)
    if magnitude == 0 or magnitude == 1:
        return format(value, ".1f")
    if magnitude < 1e-6 or magnitude >= 1e21:
        return repr(value)  # Python's repr matches Go's 'e' form: 1e-07, 1.5e+21
    if value == int(value):
        return format(value, ".1f")
    return _fixed_notation(value)


def encode_value(value) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if not -2**63 <= value <= MAX_UINT64:
            raise CanonicalJSONError(f"canonical_json: integer {value} out of 64-bit range")
        return '"' + str(value) + '"'
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, str):
        return quote_string(value)
    if isinstance(value, (bytes, bytearray)):
        return '"' + base64.b64encode(bytes(value)).decode("ascii") + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(encode_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return encode_map(value)
    raise CanonicalJSONError(f"canonical_json: cannot encode {type(value).__name__}")


def _map_sort_key(key):
    if isinstance(key, bool):
        raise CanonicalJSONError("canonical_json: boolean map keys are not supported")
    if isinstance(key, int):
        return (0, key, b"")
    if isinstance(key, str):
        return (1, 0, key.encode("utf-8", "surrogatepass"))
    raise CanonicalJSONError(f"canonical_json: map key of type {type(key).__name__}")


def encode_map(mapping: dict) -> str:
    """Keys sorted (integers numerically, strings bytewise), all keys written as strings."""
    kinds = {isinstance(k, int) for k in mapping}
    if len(kinds) > 1:
        raise CanonicalJSONError("canonical_json: map mixes integer and string keys")
    items = sorted(mapping.items(), key=lambda kv: _map_sort_key(kv[0]))
    body = []
    for key, value in items:
        key_text = '"' + str(key) + '"' if isinstance(key, int) else quote_string(key)
        body.append(key_text + ":" + encode_value(value))
    return "{" + ",".join(body) + "}"


def dumps(mapping: dict) -> bytes:
    return encode_map(mapping).encode("utf-8", "surrogatepass")


# --- decoding --------------------------------------------------------------------------------

def _reject_constant(name: str):
    raise CanonicalJSONError(f"canonical_json: {name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_LEADING_SPACE = re.compile(r"[ \t\n\r]*")
# surrogateescape turns each byte that is not UTF-8 into one of these (valid UTF-8 never does).
_UNDECODABLE = re.compile("[\udc80-\udcff]")


def loads(payload: bytes, what: str) -> dict:
    """Parse the JSON object at the start of `payload`; anything else (or invalid UTF-8/JSON in
    it) is an error naming `what`.

    Like the reference's decoder, which reads one value and stops, whatever follows the object
    (another value, garbage, invalid UTF-8) is ignored: descriptors Go nodes sign that way must
    be accepted.
    """
    text = bytes(payload).decode("utf-8", "surrogateescape")
    start = _LEADING_SPACE.match(text).end()
    try:
        obj, end = _DECODER.raw_decode(text, start)
    except CanonicalJSONError:
        raise
    except (ValueError, RecursionError) as exc:
        raise CanonicalJSONError(f"{what}: malformed JSON: {exc}") from None
    if _UNDECODABLE.search(text, start, end):
        raise CanonicalJSONError(f"{what}: malformed JSON: invalid UTF-8")
    if not isinstance(obj, dict):
        raise CanonicalJSONError(f"{what}: JSON payload is not an object")
    return obj


def get_uint(obj: dict, key: str, what: str, bits: int = 64, default: int = 0) -> int:
    """A quoted or plain non-negative integer that fits `bits` bits."""
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise CanonicalJSONError(f"{what}: {key} is not an unsigned integer: {value!r:.40}")
    if not 0 <= number < 2**bits:
        raise CanonicalJSONError(f"{what}: {key} = {number} does not fit in uint{bits}")
    return number


def parse_uint_text(text: str, what: str) -> int:
    if not isinstance(text, str) or not _DIGITS.fullmatch(text) or int(text) > MAX_UINT64:
        raise CanonicalJSONError(f"{what}: {text!r:.40} is not a uint64")
    return int(text)


def get_float(obj: dict, key: str, what: str) -> float:
    value = obj.get(key)
    if value is None:
        return 0.0
    if isinstance(value, bool):
        raise CanonicalJSONError(f"{what}: {key} is not a number")
    try:
        number = float(value) if isinstance(value, (int, float, str)) else None
    except ValueError:
        number = None
    if number is None or not math.isfinite(number):
        raise CanonicalJSONError(f"{what}: {key} is not a finite number: {value!r:.40}")
    return number


def get_string(obj: dict, key: str, what: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CanonicalJSONError(f"{what}: {key} is not a string")
    return value


def decode_b64(value, what: str) -> bytes:
    if not isinstance(value, str):
        raise CanonicalJSONError(f"{what}: expected a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise CanonicalJSONError(f"{what}: invalid base64") from None


def get_bytes(obj: dict, key: str, what: str) -> bytes | None:
    """A base64 byte string; None when absent or null."""
    value = obj.get(key)
    if value is None:
        return None
    return decode_b64(value, f"{what}: {key}")


def _get_container(obj: dict, key: str, what: str, kind: type, kind_name: str):
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, kind):
        raise CanonicalJSONError(f"{what}: {key} is not a {kind_name}")
    return value


def get_list(obj: dict, key: str, what: str) -> list | None:
    return _get_container(obj, key, what, list, "list")


def get_map(obj: dict, key: str, what: str) -> dict | None:
    return _get_container(obj, key, what, dict, "map")
