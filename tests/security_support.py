"""Helpers of the security tests: every textual form of a secret, the sockets a process
listens on (from /proc), and the secrets a network directory's key files hold."""
from __future__ import annotations

import base64
import os
import pathlib
import socket
import struct

from katzenpost import keys

LISTEN = "0A"          # TCP_LISTEN in /proc/net/tcp


def forms(secret: bytes) -> set[str]:
    """Hex (both cases), base64 (standard and URL-safe, with and without padding) and Python's
    bytes repr of `secret`: the ways a log line or a message could carry it."""
    b64 = base64.b64encode(secret).decode()
    url = base64.urlsafe_b64encode(secret).decode()
    return {secret.hex(), secret.hex().upper(), b64, b64.rstrip("="), url, url.rstrip("="),
            repr(secret)[2:-1]}


def pem_secrets(path: pathlib.Path) -> dict[str, bytes]:
    """The secret values one private PEM file holds, and those derived from it (an identity
    key's Go form and its X25519 twin), named for the failure message."""
    text = path.read_text()
    body = "".join(line for line in text.splitlines() if not line.startswith("-----"))
    raw = base64.b64decode(body)
    found = {f"{path}": raw}
    if "ED25519 PRIVATE KEY" in text:
        key = keys.IdentityKey.from_bytes(raw)
        found[f"{path} (seed)"] = key.seed
        found[f"{path} (Go form)"] = key.go_bytes()
        found[f"{path} (X25519 twin)"] = key.to_x25519_private()
    elif len(raw) > 32:
        found[f"{path} (last 32 bytes)"] = raw[-32:]
    return found


def secrets_under(root: pathlib.Path) -> dict[str, bytes]:
    found = {}
    for path in sorted(root.rglob("*.private.pem")):
        found.update(pem_secrets(path))
    return found


def leaks(texts: dict[str, str], secrets: dict[str, bytes]) -> list[str]:
    """'<secret name> in <text name>' for every form of every secret found in any text."""
    found = []
    for secret_name, secret in secrets.items():
        for form in forms(secret):
            for text_name, text in texts.items():
                if form in text:
                    found.append(f"{secret_name} in {text_name}")
    return sorted(set(found))


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue                      # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _address(hex_address: str, family: int) -> tuple[str, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if family == socket.AF_INET:
        raw = raw[::-1]
    else:                                  # four host-order 32-bit words
        raw = b"".join(struct.pack(">I", struct.unpack("<I", raw[i:i + 4])[0]) for i in range(0, 16, 4))
    return socket.inet_ntop(family, raw), int(port, 16)


def bound_sockets(pid: int) -> dict[str, set[tuple[str, int]]]:
    """{'tcp_listen': {(ip, port)}, 'udp': {(ip, port)}} of the sockets process `pid` holds."""
    inodes = _socket_inodes(pid)
    found = {"tcp_listen": set(), "udp": set()}
    for table, family, kind in (("tcp", socket.AF_INET, "tcp_listen"), ("tcp6", socket.AF_INET6, "tcp_listen"),
                                ("udp", socket.AF_INET, "udp"), ("udp6", socket.AF_INET6, "udp")):
        try:
            lines = pathlib.Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[9]) not in inodes:
                continue
            if kind == "tcp_listen" and fields[3] != LISTEN:
                continue
            found[kind].add(_address(fields[1], family))
    return found
