"""Coverage-guided fuzzing of every parser that sees network or file input (docs/fuzzing.md).

One harness module per parser in ``tests/fuzz/harnesses/``: ``TestOneInput(data)`` returns when
the parser returned or raised its documented error class; anything else escapes and is a
finding. ``python -m tests.fuzz`` runs them under atheris (libFuzzer); the seeds committed in
``tests/fuzz/corpus/<name>/`` are valid inputs made by ``tests/fuzz/seeds.py``.

This package imports nothing from katzenpost itself, so the runner can turn atheris's
instrumentation on before the parsers are imported.
"""

# name -> one line on what it feeds and where
HARNESSES = {
    "sphinx_unwrap": "whole Sphinx packets into sphinx.unwrap and the batch unwrap (compiled core)",
    "sphinx_commands": "routing slots under a valid header MAC: unwrap's command decoding against commands.parse",
    "sphinx_payload": "SURB reply payloads and keys into decrypt_surb_payload (AEZ in the compiled core)",
    "wire_commands": "wire commands into parse_command, with the re-encoding round trip",
    "wire_frames": "a byte stream of sealed and raw frames into a link Session (framing, _core.linkframe)",
    "wire_handshake": "Noise XXhfs handshake messages 1-3 and the AuthenticateMessage",
    "wire_kem": "Kyber1024 public keys and ciphertexts from the peer",
    "pki_cert": "certificates: CBOR decode, parse, verify, threshold verify",
    "pki_descriptor": "mix descriptors: raw certificates and signed JSON payloads",
    "pki_document": "PKI documents: raw certificates and signed JSON payloads with embedded descriptors",
    "cbor_plugin": "CBOR plugin HTTP responses (http11 parser) and their CBOR bodies",
    "management": "management-socket sessions: node and provider user commands",
    "registration_http": "the provider's HTTP user registration endpoint: one connection's bytes",
    "config_node": "node TOML configuration (katzenpost.config)",
    "config_authority": "authority TOML configuration (katzenpost.authority.config)",
    "keys_pem": "PEM key files: decode_pem and the DataDir key loaders",
    "replay_file": "replay-filter files: header checks, then opening and using the filter",
    "voting_vote": "a peer authority's vote / signed consensus: parse, tally, consensus acceptance",
    "voting_reveal": "a peer authority's signed reveal: open, check against the commit, SRV",
}
