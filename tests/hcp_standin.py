"""A stand-in for HCP Vagrant, for tests/test_catalog_import.py: a real HTTP server (a
process of its own on 127.0.0.1) answering `/acme/base` with a recorded HCP-style box
metadata (tests/data/hcp-acme-base.json, its @BOXES@ and @type:file@ checksums filled
in from the box files it serves) and the box files under
`/acme/boxes/base/versions/<version>/providers/<provider>/<architecture>/vagrant.box`
(`<dir>/<version>-<provider>-<architecture>.box`), with HTTP Range requests as HCP's
storage answers them. It is not HCP: it only serves what the import reads.

    python tests/hcp_standin.py --files DIR --log FILE [--template FILE]
        [--box-host NAME] [--token T] [--wrong-checksum FILE] [--drop FILE:BYTES]

--box-host: the host name in the box URLs (default 127.0.0.1; the metadata is served
on every name of 127.0.0.1); --token: `/acme/base` needs `Authorization: Bearer T`;
--wrong-checksum FILE: the metadata gives a wrong checksum for that file; --drop
FILE:BYTES: that file's answer announces its full length and the connection is
closed after BYTES. Every request is logged as one JSON line. The first line on
stdout is `serving on PORT`."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BOX_PATH = re.compile(r"/acme/boxes/base/versions/([0-9.]+)/providers/([a-z_]+)/([a-z0-9_]+)"
                      r"/vagrant\.box")
CHECKSUM = re.compile(r"@([A-Za-z0-9]+):([A-Za-z0-9._-]+)@")


def metadata(args: argparse.Namespace, port: int) -> bytes:
    def checksum(match: re.Match) -> str:
        kind, name = match.groups()
        wrong = name == args.wrong_checksum
        data = b"wrong" if wrong else (args.files / f"{name}.box").read_bytes()
        digest = hashlib.new(kind.lower(), data).hexdigest()
        return digest.upper() if kind.isupper() else digest

    text = args.template.read_text().replace("@BOXES@", f"http://{args.box_host}:{port}")
    return CHECKSUM.sub(checksum, text).encode()


def handler(args: argparse.Namespace):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            with open(args.log, "a") as log:
                log.write(json.dumps({"path": self.path, "host": self.headers.get("Host"),
                                      "range": self.headers.get("Range"),
                                      "authorization": self.headers.get("Authorization")})
                          + "\n")

        def do_GET(self):
            if self.path == "/acme/base":
                self.metadata()
            elif match := BOX_PATH.fullmatch(self.path):
                self.box("-".join(match.groups()))
            else:
                self.answer(404, b"not found\n")

        def metadata(self):
            if args.token and self.headers.get("Authorization") != f"Bearer {args.token}":
                self.answer(401, b'{"errors": ["Authentication required"]}')
                return
            self.answer(200, metadata(args, self.server.server_address[1]),
                        "application/json")

        def box(self, name: str):
            path = args.files / f"{name}.box"
            if not path.is_file():
                self.answer(404, b"not found\n")
                return
            data = path.read_bytes()
            start = int(re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or
                                     "bytes=0-").group(1))
            if start >= len(data) > 0:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if args.drop and args.drop[0] == name:
                self.wfile.write(data[start:args.drop[1]])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(data[start:])

        def answer(self, status: int, body: bytes, content_type: str = "text/plain"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--template", type=Path,
                        default=Path(__file__).parent / "data" / "hcp-acme-base.json")
    parser.add_argument("--box-host", default="127.0.0.1")
    parser.add_argument("--token")
    parser.add_argument("--wrong-checksum")
    parser.add_argument("--drop", type=lambda v: (v.split(":")[0], int(v.split(":")[1])))
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(args))
    print(f"serving on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
