"""MACs, tags and secret identifiers are compared in constant time.

The comparison sites are listed here, each with the constant-time primitive it must use (found
by looking for hmac.compare_digest, CRYPTO_memcmp/sodium_memcmp and our C helpers, and for
equality on bytes named *mac*, *tag*, *digest*, *secret*, *private*, *surb_id*). Equality on
public keys (a peer's identity or link key against the PKI document) is not on the list: they are
public, so their comparison time tells an attacker nothing. The C helpers are checked to have no
early exit; tests/test_sphinx_constant_time.py and test_aez_constant_time.py check the compiled
paths' secret-independence under valgrind.
"""
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "katzenpost"

# (file, what is compared, a pattern the file must contain: the constant-time use)
SITES = [
    ("_core/sphinx_impl.c", "Sphinx header MAC (gamma)",
     r"ct_equal\(mac, pkts\[i\] \+ SX_GAMMA_OFF, SX_MAC_LEN\)"),
    ("_core/sphinx_impl.c", "Sphinx payload tag (forward packets)",
     r"!ct_is_zero\(payload, SX_TAG_LEN\)"),
    ("_core/sphinx_impl.c", "Sphinx payload tag (SURB reply decryption)",
     r"ct_is_zero\(buf, SX_TAG_LEN\)"),
    ("_core/aez_impl.c", "AEZ authenticator (tau zero bytes)",
     r"nonzero \|= plain\[k\];"),
    ("_core/linkframe.pyx", "link-frame Poly1305 tag (OpenSSL verifies with CRYPTO_memcmp)",
     r"EVP_CTRL_AEAD_SET_TAG"),
    ("wire/noise.py", "Noise handshake AEAD tag (cryptography's ChaCha20Poly1305)",
     r"self\._aead\.decrypt\("),
    ("wire/handshake.py", "handshake prologue", r"hmac\.compare_digest\(bytes\(message\[:1\]\), PROLOGUE\)"),
    ("provider/userdb/sqlite.py", "a user's link key (client authentication)",
     r"hmac\.compare_digest\(bytes\(row\[0\]\), link_key\)"),
    ("provider/userdb/postgres.py", "a user's link key (client authentication)",
     r"hmac\.compare_digest\(key, bytes\(link_key\)\)"),
    ("server/decoy.py", "decoy reply recipient", r"hmac\.compare_digest\(recipient, self\._recipient\)"),
    ("server/decoy.py", "decoy SURB ID base",
     r"hmac\.compare_digest\(surb_id\[:_BASE_LENGTH\], self\._surb_id_base\)"),
]

# Our hand-written C: secret bytes are never compared with memcmp (it returns at the first
# difference); the helpers fold every byte.
C_SOURCES = ["_core/sphinx_impl.c", "_core/aez_impl.c", "_core/replay_impl.c", "_core/x25519_mb_impl.c"]
# The one memcmp: the lane backend's load-time known-answer test on fixed public vectors.
ALLOWED_MEMCMP = {"_core/x25519_mb_impl.c": ["memcmp(out[i], expect[i], 32)"]}
C_HELPERS = {"ct_equal": "acc |= a[i] ^ b[i];", "ct_is_zero": "acc |= a[i];"}

SECRET_NAME = r"[A-Za-z_.\]\[]*(?:mac|digest|secret|private|surb_id|_tag|tag_)[A-Za-z_.\]\[:0-9]*\)?"
PLAIN_EQUALITY = re.compile(rf"{SECRET_NAME} *(?:==|!=)|(?:==|!=) *{SECRET_NAME}")


def source(relative: str) -> str:
    return (PKG / relative).read_text()


@pytest.mark.parametrize("relative, what, pattern", SITES, ids=[f"{s[0]}: {s[1]}" for s in SITES])
def test_each_known_site_uses_a_constant_time_primitive(relative, what, pattern):
    assert re.search(pattern, source(relative)), f"{relative}: {what} no longer uses {pattern!r}"


def function_body(text: str, name: str) -> str:
    start = re.search(rf"static int {name}\([^)]*\)\s*{{", text)
    assert start, name
    depth, i = 1, start.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[start.end():i - 1]


@pytest.mark.parametrize("helper", sorted(C_HELPERS))
def test_the_c_helpers_fold_every_byte_without_an_early_exit(helper):
    body = function_body(source("_core/sphinx_impl.c"), helper)
    assert C_HELPERS[helper] in body
    loop = body[body.index("for"):body.index("return")]
    assert "return" not in loop and "break" not in loop and "if" not in loop, body


@pytest.mark.parametrize("relative", C_SOURCES)
def test_our_c_never_compares_with_memcmp(relative):
    text = source(relative)
    for allowed in ALLOWED_MEMCMP.get(relative, []):
        assert allowed in text
        text = text.replace(allowed, "")
    assert "memcmp(" not in text


def test_no_plain_equality_on_secret_named_bytes_in_the_node_and_its_tools():
    hits = []
    for path in sorted(PKG.rglob("*.py")) + sorted(PKG.rglob("*.pyx")):
        if "reference" in path.parts:        # the test-only pure-Python twins
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if PLAIN_EQUALITY.search(code) and "len(" not in code:
                hits.append(f"{path.relative_to(PKG)}:{number}: {line.strip()}")
    assert hits == []


def test_the_scan_finds_a_plain_comparison():
    assert PLAIN_EQUALITY.search("if surb_id[:8] != self._surb_id_base:")
    assert PLAIN_EQUALITY.search("return computed_mac == expected")
    assert not PLAIN_EQUALITY.search("if creds.public_key == self.desc.link_key:")
