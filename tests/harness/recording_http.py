"""A loopback HTTP server that records every request it gets and answers each with a JSON
Schema, for proving that something never fetches a URL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["RecordingServer", "recording_http_server"]

_SCHEMA = b'{"type": "string", "maxLength": 1}'


@dataclass
class RecordingServer:
    url: str  # ends with "/"
    paths: list[str] = field(default_factory=list)  # of every request received, in order


@contextmanager
def recording_http_server() -> Iterator[RecordingServer]:
    """A server on 127.0.0.1 and a free port, for the body of the `with`."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/schema+json")
            self.send_header("Content-Length", str(len(_SCHEMA)))
            self.end_headers()
            self.wfile.write(_SCHEMA)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield RecordingServer(f"http://127.0.0.1:{server.server_address[1]}/", paths)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
