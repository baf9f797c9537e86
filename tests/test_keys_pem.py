"""Key files in DataDir (README.md, Files in DataDir): the PEM example vector, round trips, file and
directory modes, and malformed files giving errors (never crashes)."""
import os
import stat

import pytest

from katzenpost import keys
from katzenpost.keys import KeyFileError

# The reference key-file example: identity seed 0x01..0x20, link scalar 0x64..0x83.
VECTOR_SEED = bytes(range(0x01, 0x21))
VECTOR_LINK = bytes(range(0x64, 0x84))
VECTOR_IDENTITY_PRIVATE_PEM = (
    b"-----BEGIN ED25519 PRIVATE KEY-----\n"
    b"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyB5tVYuj+ZU+UB4sRLoqYun\n"
    b"kB+FOuaVvtfg45ELrQSWZA==\n"
    b"-----END ED25519 PRIVATE KEY-----\n")
VECTOR_IDENTITY_PUBLIC_PEM = (
    b"-----BEGIN ED25519 PUBLIC KEY-----\n"
    b"ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ=\n"
    b"-----END ED25519 PUBLIC KEY-----\n")
VECTOR_LINK_PRIVATE_PEM = (
    b"-----BEGIN X25519 PRIVATE KEY-----\n"
    b"ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM=\n"
    b"-----END X25519 PRIVATE KEY-----\n")
VECTOR_IDENTITY_PUBLIC = bytes.fromhex("79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664")
# ToECDH of that identity (the authority's derived link key).
VECTOR_IDENTITY_X25519_PUBLIC = bytes.fromhex(
    "4a3807d064d077181cc070989e76891d20dca5559548dc2c77c1a50273882b38")


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "data"
    keys.ensure_data_dir(str(path))
    return path


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- the vector ------------------------------------------------------------------------------


def test_pem_example_vector_is_written_byte_for_byte(data_dir):
    identity = keys.IdentityKey.from_seed(VECTOR_SEED)
    assert identity.public == VECTOR_IDENTITY_PUBLIC
    keys.write_identity_key(str(data_dir), identity)
    keys.write_link_key(str(data_dir), keys.LinkKey.from_private(VECTOR_LINK))
    assert (data_dir / "identity.private.pem").read_bytes() == VECTOR_IDENTITY_PRIVATE_PEM
    assert (data_dir / "identity.public.pem").read_bytes() == VECTOR_IDENTITY_PUBLIC_PEM
    assert (data_dir / "link.private.pem").read_bytes() == VECTOR_LINK_PRIVATE_PEM


def test_pem_example_vector_loads(data_dir):
    (data_dir / "identity.private.pem").write_bytes(VECTOR_IDENTITY_PRIVATE_PEM)
    (data_dir / "link.private.pem").write_bytes(VECTOR_LINK_PRIVATE_PEM)
    identity = keys.load_identity_key(str(data_dir))
    assert identity.seed == VECTOR_SEED and identity.public == VECTOR_IDENTITY_PUBLIC
    link = keys.load_link_key(str(data_dir))
    assert link.private == VECTOR_LINK
    assert link.public == keys.x25519_public(VECTOR_LINK)


def test_to_ecdh_vector():
    identity = keys.IdentityKey.from_seed(VECTOR_SEED)
    assert identity.to_x25519_public() == VECTOR_IDENTITY_X25519_PUBLIC


def test_identity_key_signs_verifiably():
    identity = keys.IdentityKey.from_seed(VECTOR_SEED)
    signature = identity.sign(b"descriptor")
    identity.private_key().public_key().verify(signature, b"descriptor")


def test_long_body_is_wrapped_at_64_columns():
    text = keys.encode_pem("TEST", bytes(100)).decode()
    lines = text.splitlines()
    assert lines[0] == "-----BEGIN TEST-----" and lines[-1] == "-----END TEST-----"
    assert [len(line) for line in lines[1:-1]] == [64, 64, 8]
    assert keys.decode_pem(text.encode()) == ("TEST", bytes(100), b"")


def test_pem_headers_are_ignored_and_first_block_is_used():
    data = (b"leading text\n-----BEGIN X25519 PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\n"
            + VECTOR_LINK_PRIVATE_PEM.split(b"\n", 1)[1])
    assert keys.decode_pem(data)[1] == VECTOR_LINK


# --- round trip and files --------------------------------------------------------------------


def test_first_start_creates_keys_0600_and_later_starts_load_them(data_dir):
    identity, created = keys.load_or_create_identity_key(str(data_dir))
    link, link_created = keys.load_or_create_link_key(str(data_dir))
    assert created and link_created
    for name in ("identity.private.pem", "identity.public.pem", "link.private.pem"):
        assert mode_of(data_dir / name) == 0o600, name
    assert not (data_dir / "link.public.pem").exists()
    again, created_again = keys.load_or_create_identity_key(str(data_dir))
    link_again, link_created_again = keys.load_or_create_link_key(str(data_dir))
    assert not created_again and not link_created_again
    assert again == identity and link_again == link


def test_key_files_are_0600_even_with_an_open_umask(data_dir):
    old = os.umask(0)
    try:
        keys.load_or_create_identity_key(str(data_dir))
    finally:
        os.umask(old)
    assert mode_of(data_dir / "identity.private.pem") == 0o600


def test_public_identity_file_is_not_rewritten_when_the_private_key_exists(data_dir):
    keys.load_or_create_identity_key(str(data_dir))
    (data_dir / "identity.public.pem").write_bytes(b"operator's copy")
    keys.load_or_create_identity_key(str(data_dir))
    assert (data_dir / "identity.public.pem").read_bytes() == b"operator's copy"


def test_generated_keys_differ_and_repr_hides_secrets():
    one, two = keys.IdentityKey.generate(), keys.IdentityKey.generate()
    assert one.seed != two.seed
    link = keys.LinkKey.generate()
    assert one.seed.hex() not in repr(one) and link.private.hex() not in repr(link)
    assert one.public.hex() in repr(one)


def test_go_form_with_a_wrong_public_half_is_refused(data_dir):
    body = VECTOR_SEED + bytes(32)
    (data_dir / "identity.private.pem").write_bytes(keys.encode_pem("ED25519 PRIVATE KEY", body))
    with pytest.raises(KeyFileError, match="public half does not match"):
        keys.load_identity_key(str(data_dir))


# --- DataDir ---------------------------------------------------------------------------------


def test_data_dir_is_created_0700(tmp_path):
    old = os.umask(0o022)
    try:
        keys.ensure_data_dir(str(tmp_path / "new"))
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "new") == 0o700


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701, 0o500])
def test_existing_data_dir_with_other_mode_is_refused(tmp_path, mode):
    path = tmp_path / "wide"
    path.mkdir()
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="has invalid permissions"):
        keys.ensure_data_dir(str(path))


def test_existing_data_dir_0700_is_accepted_and_a_file_is_refused(tmp_path):
    path = tmp_path / "ok"
    path.mkdir(mode=0o700)
    path.chmod(0o700)
    keys.ensure_data_dir(str(path))
    (tmp_path / "file").write_text("x")
    with pytest.raises(KeyFileError, match="is not a directory"):
        keys.ensure_data_dir(str(tmp_path / "file"))


def test_a_symlinked_data_dir_is_refused_as_the_reference_does(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    real.chmod(0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(KeyFileError, match="is not a directory"):
        keys.ensure_data_dir(str(tmp_path / "link"))


def test_check_data_dir_lists_every_problem_and_changes_nothing(tmp_path):
    assert keys.check_data_dir(str(tmp_path / "absent")) == []
    assert not (tmp_path / "absent").exists()
    wide = tmp_path / "wide"
    wide.mkdir()
    wide.chmod(0o750)
    (wide / "identity.private.pem").write_bytes(VECTOR_LINK_PRIVATE_PEM)
    (wide / "link.private.pem").write_bytes(b"junk")
    problems = keys.check_data_dir(str(wide))
    assert len(problems) == 3, problems
    assert "has invalid permissions" in problems[0]
    assert "identity.private.pem" in problems[1] and "invalid PEM Type" in problems[1]
    assert "link.private.pem" in problems[2] and "no PEM block found" in problems[2]
    assert stat.S_IMODE(os.stat(wide).st_mode) == 0o750
    (tmp_path / "file").write_text("x")
    assert keys.check_data_dir(str(tmp_path / "file")) == [f"DataDir '{tmp_path / 'file'}' is not a directory"]
    good = tmp_path / "good"
    keys.ensure_data_dir(str(good))
    keys.load_or_create_identity_key(str(good))
    assert keys.check_data_dir(str(good)) == []


def test_data_dir_whose_parent_is_missing_is_an_error(tmp_path):
    with pytest.raises(KeyFileError, match="cannot be created"):
        keys.ensure_data_dir(str(tmp_path / "missing" / "data"))


# --- bad files -------------------------------------------------------------------------------

BAD_IDENTITY_FILES = [
    (b"", "no PEM block found"),
    (b"this is not a key\n", "no PEM block found"),
    (bytes(range(256)), "no PEM block found"),
    (VECTOR_IDENTITY_PRIVATE_PEM + b"\n", "trailing garbage after PEM encoded private key"),
    (VECTOR_IDENTITY_PRIVATE_PEM + VECTOR_LINK_PRIVATE_PEM, "trailing garbage"),
    (VECTOR_LINK_PRIVATE_PEM, "invalid PEM Type: 'X25519 PRIVATE KEY'"),
    (keys.encode_pem("ED25519 PRIVATE KEY", bytes(63)), "invalid key"),
    (keys.encode_pem("ED25519 PRIVATE KEY", bytes(32)), "invalid key"),
    (b"-----BEGIN ED25519 PRIVATE KEY-----\n!!!!\n-----END ED25519 PRIVATE KEY-----\n", "no PEM block"),
    (b"-----BEGIN ED25519 PRIVATE KEY-----\nAQID\n", "no PEM block"),  # no END line
    (VECTOR_IDENTITY_PRIVATE_PEM.replace(b"END ED25519", b"END X25519"), "no PEM block"),
]


@pytest.mark.parametrize("content, message", BAD_IDENTITY_FILES)
def test_malformed_identity_file_is_an_error_naming_the_file(data_dir, content, message):
    (data_dir / "identity.private.pem").write_bytes(content)
    with pytest.raises(KeyFileError) as caught:
        keys.load_or_create_identity_key(str(data_dir))
    assert message in str(caught.value)
    assert "identity.private.pem" in str(caught.value)


@pytest.mark.parametrize("content, message", [
    (VECTOR_IDENTITY_PUBLIC_PEM, "invalid PEM Type: 'ED25519 PUBLIC KEY'"),
    (keys.encode_pem("X25519 PRIVATE KEY", bytes(31)), "invalid key"),
    (b"\x00\xff" * 40, "no PEM block found"),
])
def test_malformed_link_file_is_an_error(data_dir, content, message):
    (data_dir / "link.private.pem").write_bytes(content)
    with pytest.raises(KeyFileError, match=message):
        keys.load_or_create_link_key(str(data_dir))


def test_a_huge_key_file_or_a_device_is_refused_without_reading_it_all(data_dir):
    (data_dir / "identity.private.pem").write_bytes(
        VECTOR_IDENTITY_PRIVATE_PEM + b"x" * keys.MAX_KEY_FILE_BYTES)
    with pytest.raises(KeyFileError, match="larger than"):
        keys.load_identity_key(str(data_dir))
    if os.path.exists("/dev/zero"):
        (data_dir / "link.private.pem").symlink_to("/dev/zero")
        with pytest.raises(KeyFileError, match="larger than"):
            keys.load_or_create_link_key(str(data_dir))


def test_unreadable_key_path_is_an_error(data_dir):
    (data_dir / "link.private.pem").mkdir()
    with pytest.raises(KeyFileError, match="cannot read"):
        keys.load_link_key(str(data_dir))


# --- key strings -----------------------------------------------------------------------------


def test_key_strings_try_hex_first_then_base64():
    assert keys.decode_key_string(VECTOR_IDENTITY_PUBLIC.hex().upper()) == VECTOR_IDENTITY_PUBLIC
    assert keys.decode_key_string("ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ=") == VECTOR_IDENTITY_PUBLIC
    # "abcd" is both valid hex and valid base64: hex wins, as in the reference
    assert keys.decode_key_string("abcd") == b"\xab\xcd"
    for bad in ("not a key!", "ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ", "é"):
        with pytest.raises(ValueError):
            keys.decode_key_string(bad)


def test_public_key_string_forms():
    assert keys.public_key_hex(VECTOR_IDENTITY_PUBLIC) == VECTOR_IDENTITY_PUBLIC.hex().upper()
    assert keys.public_key_base64(VECTOR_IDENTITY_PUBLIC) == "ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ="
