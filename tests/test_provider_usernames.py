"""Username and recipient fix-up as the reference provider: PRECIS case mapping by default,
case preserved, binary recipients, the recipient delimiter, and the names that must be refused."""
import pytest

from katzenpost.provider.usernames import InvalidUsername, UsernamePolicy

MAPPED, PRESERVED, BINARY = UsernamePolicy(), UsernamePolicy(case_sensitive=True), UsernamePolicy(True)


@pytest.mark.parametrize("policy, raw, fixed", [
    (MAPPED, b"Alice", b"alice"),
    (MAPPED, "ＡＬＩＣＥ".encode(), b"alice"),              # width mapping
    (MAPPED, "Ålice".encode(), "ålice".encode()),
    (MAPPED, "A\u030alice".encode(), "ålice".encode()),      # NFC
    (PRESERVED, b"Alice", b"Alice"),
    (PRESERVED, "Ａlice".encode(), b"Alice"),
    (BINARY, b"\x00\xffAlice", b"\x00\xffAlice"),
    (MAPPED, b"x" * 64, b"x" * 64),
])
def test_fix_user(policy, raw, fixed):
    assert policy.fix_user(raw) == fixed


@pytest.mark.parametrize("policy, raw", [
    (MAPPED, b""), (MAPPED, b"x" * 65), (MAPPED, b"al ice"), (MAPPED, b"al\x00ice"),
    (MAPPED, b"\xff\xfe"), (MAPPED, b"tab\there"), (PRESERVED, b"al ice"), (PRESERVED, b"\xc3"),
    (BINARY, b""), (BINARY, b"x" * 65), (MAPPED, "ä".encode() * 33),  # 66 bytes once encoded
])
def test_invalid_names_are_refused(policy, raw):
    with pytest.raises(InvalidUsername):
        policy.fix_user(raw)


@pytest.mark.parametrize("delimiter, recipient, user", [
    ("", b"Alice+tag", b"alice+tag"),
    ("+", b"Alice+tag", b"alice"),
    ("+", b"+loop", b"+loop"),                # a name starting with the delimiter is kept whole
    ("+", b"alice", b"alice"),
    ("-", b"bob-x-y", b"bob"),
])
def test_fix_recipient_trims_nuls_and_cuts_at_the_delimiter(delimiter, recipient, user):
    policy = UsernamePolicy(recipient_delimiter=delimiter)
    assert policy.fix_recipient(recipient.ljust(64, b"\x00")) == user


def test_binary_recipients_keep_the_whole_64_bytes():
    assert BINARY.fix_recipient(b"alice".ljust(64, b"\x00")) == b"alice".ljust(64, b"\x00")


def test_an_all_nul_recipient_is_invalid():
    with pytest.raises(InvalidUsername):
        MAPPED.fix_recipient(bytes(64))
