"""Property tests: no key file or key string, however malformed, crashes the loaders. Random
bytes and mutations of the reference's PEM example end in a key or a KeyFileError / ValueError."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from katzenpost import keys

VECTOR_IDENTITY_PRIVATE_PEM = (
    b"-----BEGIN ED25519 PRIVATE KEY-----\n"
    b"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyB5tVYuj+ZU+UB4sRLoqYun\n"
    b"kB+FOuaVvtfg45ELrQSWZA==\n"
    b"-----END ED25519 PRIVATE KEY-----\n")


@st.composite
def mutated_vector(draw) -> bytes:
    data = bytearray(VECTOR_IDENTITY_PRIVATE_PEM)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip" and position < len(data):
            data[position] ^= draw(st.integers(1, 255))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del data[position:position + draw(st.integers(1, 8))]
        else:
            del data[position:]
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=400), mutated_vector()))
def test_decode_pem_returns_a_block_or_raises_value_error(data):
    try:
        block_type, body, rest = keys.decode_pem(data)
    except ValueError:
        return
    assert isinstance(block_type, str) and isinstance(body, bytes) and isinstance(rest, bytes)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutated_vector())
def test_a_mutated_identity_file_loads_or_is_a_key_file_error(tmp_path, data):
    (tmp_path / keys.IDENTITY_PRIVATE_FILE).write_bytes(data)
    try:
        key = keys.load_identity_key(str(tmp_path))
    except keys.KeyFileError as err:
        assert keys.IDENTITY_PRIVATE_FILE in str(err)
        return
    assert key.seed == bytes(range(1, 33))  # only an equivalent encoding can load


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=100))
def test_decode_key_string_returns_bytes_or_raises_value_error(text):
    try:
        assert isinstance(keys.decode_key_string(text), bytes)
    except ValueError:
        pass
