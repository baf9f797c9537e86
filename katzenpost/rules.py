"""Rules shared by the node's and the authority's configuration and the PKI formats: host-name
normalisation (IDNA "Lookup"), discovery of the host's default address, and the bounds of the
epoch period.

A leaf of the base: standard library only, so `config`, `pki` and `authority` can all import it
without importing each other.
"""
from __future__ import annotations

import encodings.idna
import ipaddress
import re
import socket

# The reference epoch period, 20 minutes (core/epochtime.Period).
DEFAULT_PERIOD = 20 * 60
# Shortest period a test network may use: every timing rule is a fraction of the period and
# the worker ticks need a few seconds of room.
MIN_TEST_PERIOD = 10


def epoch_period_problem(period: int) -> str | None:
    """Why `Debug.EpochPeriod` is refused (None when it is 0, the default, or a test period).

    Nodes and their authority apply the same bounds, so a test network's period is valid for
    all of them or for none.
    """
    if period == 0 or MIN_TEST_PERIOD <= period <= DEFAULT_PERIOD:
        return None
    return (f"config: Debug.EpochPeriod must be 0 or {MIN_TEST_PERIOD}..{DEFAULT_PERIOD} "
            f"seconds, got {period}")


_STD3_LABEL = re.compile(r"[a-z0-9-]+")
_IDNA_DOTS = re.compile("[.\u3002\uff0e\uff61]")


def _check_std3_label(label: str) -> None:
    if not _STD3_LABEL.fullmatch(label):
        bad = next(c for c in label if not _STD3_LABEL.fullmatch(c))
        raise ValueError(f"label '{label}' contains {bad!r} (only letters, digits and '-' are allowed)")
    if label.startswith("-") or label.endswith("-"):
        raise ValueError(f"label '{label}' starts or ends with '-'")
    if label[2:4] == "--" and not label.startswith("xn--"):
        raise ValueError(f"label '{label}' has '--' in positions 3-4")


def idna_lookup_to_ascii(name: str) -> str:
    """IDNA "Lookup" normalization of a host name (lowercase, STD3 rules, punycode).

    ASCII labels follow the reference exactly; non-ASCII labels go through IDNA2003 nameprep
    (the standard library's codec), which matches UTS #46 for all but a few rare code points.
    """
    labels = _IDNA_DOTS.split(name)
    out = []
    for index, label in enumerate(labels):
        if not label:
            if index == len(labels) - 1 and index > 0:
                out.append("")  # a trailing root dot
                continue
            raise ValueError(f"empty label in '{name}'")
        if label.isascii():
            ascii_label = label.lower()
            if ascii_label.startswith("xn--"):
                _check_punycode_label(ascii_label)
        else:
            try:
                ascii_label = encodings.idna.ToASCII(label).decode("ascii").lower()
            except UnicodeError as err:
                raise ValueError(f"label '{label}': {err}") from None
        _check_std3_label(ascii_label)
        out.append(ascii_label)
    return ".".join(out)


def _check_punycode_label(label: str) -> None:
    try:
        decoded = label[4:].encode("ascii").decode("punycode")
        again = encodings.idna.ToASCII(decoded).decode("ascii").lower()
    except UnicodeError:
        raise ValueError(f"label '{label}' is not valid punycode") from None
    if again != label:
        raise ValueError(f"label '{label}' is not in normalized form")



def discover_global_ipv4() -> str | None:
    """The host's globally routable IPv4 address on the default route, if any (no packet sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only selects a route
            address = probe.getsockname()[0]
    except OSError:
        return None
    return address if ipaddress.ip_address(address).is_global else None


