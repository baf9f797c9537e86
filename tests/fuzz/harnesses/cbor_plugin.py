"""CBOR plugin replies (`provider.kaetzchen.cborplugin` over `provider.kaetzchen.http11`): the
HTTP response a plugin writes on its socket, fed in fuzz-chosen chunks, then its body decoded as
a /request reply and as /parameters.

Documented outcome: `HTTPError` from the response parser, `PluginError` from the CBOR decoders,
or the reply payload (bytes) / parameters (a text-to-text map)."""
import cbor2

from katzenpost.provider.kaetzchen.cborplugin import PluginError, decode_parameters, decode_response
from katzenpost.provider.kaetzchen.http11 import MAX_BODY_BYTES, HTTPError, ResponseParser
from tests.fuzz.data import Reader

MAX_LEN = 8192


def _parse(r: Reader):
    parser = ResponseParser()
    try:
        while r.remaining() and not parser.done:
            parser.feed(r.take(1 + r.byte()))
        if not parser.done:
            parser.feed_eof()
    except HTTPError:
        return None
    assert parser.done and isinstance(parser.body, bytes) and len(parser.body) <= MAX_BODY_BYTES
    return parser.body


def _decode(body: bytes) -> None:
    try:
        assert isinstance(decode_response(body), bytes)
    except PluginError:
        pass
    try:
        params = decode_parameters(body)
    except PluginError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())


def TestOneInput(data: bytes) -> None:
    r = Reader(data)
    if r.byte() & 1:
        _decode(r.rest())  # a body on its own: the CBOR decoders without the HTTP layer
        return
    body = _parse(r)
    if body is not None:
        _decode(body)


def _chunked(response: bytes) -> bytes:
    """A response as one feed of at most 256 bytes after another (the harness's chunking)."""
    out = b"\x00"
    for i in range(0, len(response), 256):
        piece = response[i:i + 256]
        out += bytes([len(piece) - 1]) + piece
    return out


def seeds():
    reply = cbor2.dumps({"Payload": b"echo!"})
    params = cbor2.dumps({"endpoint": "+echo", "x": "y"})
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
    return {
        "reply": _chunked(head + b"Content-Length: %d\r\n\r\n" % len(reply) + reply),
        "params-chunked": _chunked(head + b"Transfer-Encoding: chunked\r\n\r\n"
                                   + b"%x\r\n" % len(params) + params + b"\r\n0\r\n\r\n"),
        "until-eof": _chunked(head + b"\r\n" + reply),
        "body-reply": b"\x01" + reply,
        "body-params": b"\x01" + params,
        "body-empty-map": b"\x01" + cbor2.dumps({}),
    }
