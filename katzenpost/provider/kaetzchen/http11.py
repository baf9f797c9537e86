"""A minimal sans-I/O HTTP/1.1 client exchange for the CBOR plugins' UNIX sockets: build one
POST request, and parse the response incrementally (Content-Length, chunked, or until EOF)."""
from __future__ import annotations

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024


class HTTPError(Exception):
    """The plugin's answer is not a usable HTTP response."""


def build_post(path: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: unix\r\nUser-Agent: katzenpost\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode("ascii") + body


class ResponseParser:
    """Feed received bytes; `done` once a whole response is in, then `status` and `body`."""

    def __init__(self):
        self._buffer = bytearray()
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body: bytes | None = None
        self._body_start = -1

    @property
    def done(self) -> bool:
        return self.body is not None

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if self._body_start < 0:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise HTTPError("response head too long")
                return
            self._parse_head(bytes(self._buffer[:end]))
            self._body_start = end + 4
        if len(self._buffer) - self._body_start > MAX_BODY_BYTES + MAX_HEAD_BYTES:
            raise HTTPError("response body too long")
        self._try_body(eof=False)

    def feed_eof(self) -> None:
        if self._body_start < 0:
            raise HTTPError("connection closed before the response head")
        if not self.done:
            self._try_body(eof=True)
        if not self.done:
            raise HTTPError("connection closed inside the response body")

    def _parse_head(self, head: bytes) -> None:
        try:
            lines = head.decode("latin-1").split("\r\n")
            version, code, *_ = lines[0].split(" ", 2)
            if not version.startswith("HTTP/1."):
                raise ValueError(version)
            self.status = int(code)
        except (ValueError, IndexError):
            raise HTTPError(f"bad status line {head[:40]!r}") from None
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise HTTPError(f"bad header line {line[:40]!r}")
            self.headers[name.strip().lower()] = value.strip()

    def _try_body(self, eof: bool) -> None:
        data = bytes(self._buffer[self._body_start:])
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            self.body = _dechunk(data, eof)
            return
        length = self.headers.get("content-length")
        if length is not None:
            try:
                length = int(length)
            except ValueError:
                raise HTTPError("bad Content-Length") from None
            if not 0 <= length <= MAX_BODY_BYTES:
                raise HTTPError(f"Content-Length {length} out of range")
            if len(data) >= length:
                self.body = data[:length]
        elif eof:
            if len(data) > MAX_BODY_BYTES:
                raise HTTPError("response body too long")
            self.body = data


def _chunk_size(line: bytes) -> int:
    """The chunk-size field (hex digits only, before any extension): int() alone would also take
    a sign, which made a negative size move the parser backwards forever (found by fuzzing)."""
    field = line.split(b";")[0].strip(b" \t")
    if not field or len(field) > 16 or field.strip(b"0123456789abcdefABCDEF"):
        raise HTTPError("bad chunk size")
    return int(field, 16)


def _dechunk(data: bytes, eof: bool) -> bytes | None:
    out, pos = bytearray(), 0
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            break
        size = _chunk_size(data[pos:line_end])
        if size == 0:
            return bytes(out)
        start, end = line_end + 2, line_end + 2 + size
        if len(data) < end + 2:
            break
        out += data[start:end]
        if len(out) > MAX_BODY_BYTES:
            raise HTTPError("response body too long")
        pos = end + 2
    if eof:
        raise HTTPError("truncated chunked body")
    return None
