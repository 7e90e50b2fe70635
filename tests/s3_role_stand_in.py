"""S3 as the batch jobs' role sees it, on 127.0.0.1 in front of moto's S3: what moto does not model.

The job role of deploy/ftm.yaml may read and write objects under `BUCKET/PREFIX/` only, and list
the bucket only with `s3:prefix` under it. This server forwards every request to moto and
answers as S3 answers such a role, by two documented rules:

- A request for an object outside the prefix, or a listing outside it, is refused with 403
  AccessDenied (IAM: no statement allows it).
- A GET or HEAD of a missing object answers 404 only to a caller allowed s3:ListBucket on the
  bucket, else 403 (S3 API reference, GetObject and HeadObject, "Permissions"). Whether a
  ListBucket allowed only under a prefix counts is not documented, so `missing` says which
  answer a missing key gets here: "404" or "403".

Requests are path-style (`/BUCKET/KEY`), as pyarrow and boto3 send them to an endpoint override.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
)
# Hop-by-hop and length headers: the forwarding sets its own.
_DROPPED = {"host", "content-length", "transfer-encoding", "connection"}


class S3RoleStandIn:
    def __init__(self, upstream: str, bucket: str, prefix: str, missing: str = "403") -> None:
        assert missing in ("403", "404")
        self.upstream, self.bucket, self.prefix, self.missing = upstream, bucket, prefix.strip("/"), missing
        self.client = httpx.Client(base_url=upstream, timeout=30.0)
        self.refused: list[str] = []  # "METHOD /path", for the test to see what was refused
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's names)
                stand_in.handle(self)

            do_HEAD = do_PUT = do_POST = do_DELETE = do_GET  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        body = _body(request)
        split = urlsplit(request.path)
        bucket, _, key = unquote(split.path).lstrip("/").partition("/")
        query = parse_qs(split.query)
        if bucket == self.bucket and not self._allowed(key, query):
            self.refused.append(f"{request.command} {request.path}")
            return _answer(request, 403, {"Content-Type": "application/xml"}, DENIED)
        headers = {name: value for name, value in request.headers.items() if name.lower() not in _DROPPED}
        reply = self.client.request(request.command, request.path, headers=headers, content=body)
        if reply.status_code == 404 and key and request.command in ("GET", "HEAD") and self.missing == "403":
            self.refused.append(f"{request.command} {request.path}")
            return _answer(request, 403, {"Content-Type": "application/xml"}, DENIED)
        kept = {name: value for name, value in reply.headers.items() if name.lower() not in _DROPPED}
        _answer(request, reply.status_code, kept, reply.content, reply.headers.get("Content-Length"))

    def _allowed(self, key: str, query: dict[str, list[str]]) -> bool:
        if key:  # an object: Resource BUCKET/PREFIX/*
            return key.startswith(f"{self.prefix}/")
        listed = (query.get("prefix") or [""])[0]  # a listing: Condition s3:prefix PREFIX, PREFIX/*
        return listed == self.prefix or listed.startswith(f"{self.prefix}/")


def _body(request: BaseHTTPRequestHandler) -> bytes:
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        data = b""
        while size := int(request.rfile.readline().split(b";")[0].strip() or b"0", 16):
            data += request.rfile.read(size)
            request.rfile.readline()
        request.rfile.readline()
        return data
    length = int(request.headers.get("Content-Length") or 0)
    return request.rfile.read(length) if length else b""


def _answer(
    request: BaseHTTPRequestHandler,
    status: int,
    headers: dict[str, str],
    body: bytes,
    length: str | None = None,
) -> None:
    request.send_response(status)
    for name, value in headers.items():
        request.send_header(name, value)
    # A HEAD's length is the object's, as the upstream said it; its body is empty.
    request.send_header("Content-Length", length if request.command == "HEAD" and length else str(len(body)))
    request.end_headers()
    if request.command != "HEAD":
        request.wfile.write(body)
