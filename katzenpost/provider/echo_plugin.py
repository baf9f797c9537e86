"""`katzenpost-echo-plugin`: a CBOR Kaetzchen plugin that returns each request's payload, as the
reference's echo plugin. It prints its UNIX socket path on the first stdout line and serves
HTTP with CBOR bodies there: POST /request → {"Payload": <the request's Payload>},
POST /parameters → CBOR null."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socketserver
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler

import cbor2

MAX_REQUEST_BYTES = 64 * 1024
log = logging.getLogger("echo")


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_REQUEST_BYTES:
            return self._reply(400, b"")
        body = self.rfile.read(length)
        if self.path == "/parameters":
            return self._reply(200, cbor2.dumps(None))
        if self.path != "/request":
            return self._reply(404, b"")
        try:
            request = cbor2.loads(body)
            payload = request["Payload"]
            if not isinstance(payload, bytes):
                raise TypeError("Payload is not a byte string")
        except Exception as err:
            log.error("bad request: %s", err)
            return self._reply(400, b"")
        log.debug("request %s (%d bytes, SURB: %s)", request.get("ID"), len(payload), request.get("HasSURB"))
        self._reply(200, cbor2.dumps({"Payload": payload}))

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self):
        return "unix"

    def log_message(self, fmt, *args):
        log.debug(fmt, *args)


class UnixHTTPServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def parse_args(argv):
    # Go-style single-dash long flags, as the provider passes its Config entries.
    parser = argparse.ArgumentParser(prog="katzenpost-echo-plugin")
    parser.add_argument("-log_dir", required=True, help="an existing directory for the log file")
    parser.add_argument("-log_level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not os.path.isdir(args.log_dir):
        print(f"katzenpost-echo-plugin: log_dir '{args.log_dir}' is not a directory", file=sys.stderr)
        return 1
    logging.basicConfig(filename=os.path.join(args.log_dir, f"echo.{os.getpid()}.log"),
                        level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    socket_dir = tempfile.mkdtemp(prefix="katzenpost-echo-")
    path = os.path.join(socket_dir, f"{os.getpid()}.echo.socket")
    server = UnixHTTPServer(path, EchoHandler)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(path, flush=True)
    log.info("listening on %s", path)
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(socket_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
