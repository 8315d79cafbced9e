"""What the browser tests run: Debian's Chromium through playwright-core (`driver.mjs`), and the
test page's own origin, a small static server on another loopback port than replaybus.

The static server serves the page (`page.html`, `page.js`), the product files
(`clients/js/*.js` at `/clients/js/`), the CometD client's ES modules
(`tests/node/node_modules/cometd/*.js` at `/vendor/cometd/`), and two endpoints the test
controls: `/token/<name>` (the page's backend handing out access tokens, following a plan per
name) and `/barrier/<name>` (answers once the test releases it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.bayeux_node import NODE_DIR, NodeRun, Record, collect_lines
from tests.e2e.server import RunningServer

__all__ = [
    "CHROMIUM",
    "PageServer",
    "TokenStep",
    "browser_records",
    "invalid_token",
    "page_server",
    "publish",
    "publish_then_token",
    "require_chromium",
    "run_driver",
    "valid_token",
]

#: Debian's Chromium (`apt-get install chromium chromium-driver`); never a downloaded build.
CHROMIUM = Path("/usr/bin/chromium")

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parents[1]
_CLIENTS = _ROOT / "clients" / "js"
_COMETD = NODE_DIR / "node_modules" / "cometd"
_DRIVER = _HERE / "driver.mjs"
_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.js")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_BARRIER_TIMEOUT = 30.0


def require_chromium() -> Path:
    """The Chromium binary; fails the test with what to install when it is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        raise AssertionError(
            f"Debian's Chromium is not installed at {CHROMIUM}: the browser tests need the "
            "Debian packages `chromium` and `chromium-driver` "
            "(`apt-get install chromium chromium-driver`; `make test` installs them)"
        )
    return CHROMIUM


#: One answer of `/token/<name>`: given the replaybus server, the token to hand out.
TokenStep = Callable[[RunningServer], str]


def valid_token(server: RunningServer) -> str:
    return server.token()


def invalid_token(server: RunningServer) -> str:
    """Not a token at all: the server answers 401 `invalid_token`."""
    return "not-a-valid-token"


def publish_then_token(
    channel: str, payloads: Sequence[Mapping[str, Any]], acks: list[dict[str, Any]]
) -> TokenStep:
    """Publishes `payloads` (one batch) while the page waits for its token, then hands out a
    valid one: the events are published while the page's subscription has no stream open."""

    def step(server: RunningServer) -> str:
        response = httpx.post(
            f"{server.base_url}/v1/events{channel}",
            json=list(payloads),
            headers={"Authorization": f"Bearer {server.token()}"},
            timeout=30,
        )
        response.raise_for_status()
        acks.extend(response.json())
        return server.token()

    return step


async def publish(
    server: RunningServer, channel: str, payloads: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Publishes `payloads` as one batch with a fresh token (tokens may live only 10 s); the
    acknowledgements, in order."""
    async with httpx.AsyncClient(timeout=30) as client:
        form = {
            "grant_type": "client_credentials",
            "client_id": server.client_id,
            "client_secret": server.client_secret,
        }
        response = await client.post(f"{server.base_url}/services/oauth2/token", data=form)
        response.raise_for_status()
        token = response.json()["access_token"]
        response = await client.post(
            f"{server.base_url}/v1/events{channel}",
            json=list(payloads),
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 201, response.text
    acks: list[dict[str, Any]] = response.json()
    assert len(acks) == len(payloads), acks
    return acks


@dataclass
class _TokenPlan:
    server: RunningServer
    steps: list[TokenStep]
    requests: int = 0


@dataclass
class PageServer:
    """The page's origin: static files plus the token and barrier endpoints (thread-safe)."""

    httpd: ThreadingHTTPServer
    _plans: dict[str, _TokenPlan] = field(default_factory=dict)
    _barriers: dict[str, threading.Event] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def origin(self) -> str:
        host, port = self.httpd.server_address[:2]
        assert isinstance(host, str)
        return f"http://{host}:{port}"

    def plan_tokens(self, name: str, server: RunningServer, steps: Sequence[TokenStep]) -> None:
        """`/token/<name>` answers with `steps` in order, then with valid tokens."""
        with self._lock:
            self._plans[name] = _TokenPlan(server, list(steps))

    def token_requests(self, name: str) -> int:
        with self._lock:
            return self._plans[name].requests

    def release(self, name: str) -> None:
        self._barrier(name).set()

    def _barrier(self, name: str) -> threading.Event:
        with self._lock:
            return self._barriers.setdefault(name, threading.Event())

    def _token(self, name: str) -> str | None:
        with self._lock:
            plan = self._plans.get(name)
            if plan is None:
                return None
            plan.requests += 1
            step = plan.steps.pop(0) if plan.steps else valid_token
        return step(plan.server)

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        status, body, kind = self._answer(handler.path.split("?", 1)[0])
        _send(handler, status, body, kind)

    def _answer(self, path: str) -> tuple[HTTPStatus, bytes, str]:
        if path in ("/", "/page.html"):
            return _file(_HERE / "page.html")
        if path == "/favicon.ico":
            return HTTPStatus.NO_CONTENT, b"", "image/x-icon"
        if path == "/page.js":
            return _file(_HERE / "page.js")
        for prefix, folder in (("/clients/js/", _CLIENTS), ("/vendor/cometd/", _COMETD)):
            if path.startswith(prefix) and _FILE.fullmatch(path[len(prefix) :]):
                return _file(folder / path[len(prefix) :])
        if path.startswith("/token/") and _NAME.fullmatch(name := path[len("/token/") :]):
            token = self._token(name)
            if token is None:
                return HTTPStatus.NOT_FOUND, b"no token plan", "text/plain"
            return HTTPStatus.OK, token.encode(), "text/plain"
        if path.startswith("/barrier/") and _NAME.fullmatch(name := path[len("/barrier/") :]):
            released = self._barrier(name).wait(_BARRIER_TIMEOUT)
            return (
                (HTTPStatus.NO_CONTENT if released else HTTPStatus.GATEWAY_TIMEOUT),
                b"",
                "text/plain",
            )
        return HTTPStatus.NOT_FOUND, b"not found", "text/plain"

    def release_all(self) -> None:
        with self._lock:
            barriers = list(self._barriers.values())
        for barrier in barriers:
            barrier.set()


def _send(handler: BaseHTTPRequestHandler, status: HTTPStatus, body: bytes, kind: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", kind)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Cache-Control", "no-store")
    handler.end_headers()
    if body:
        handler.wfile.write(body)


def _file(path: Path) -> tuple[HTTPStatus, bytes, str]:
    if not path.is_file():
        return HTTPStatus.NOT_FOUND, b"not found", "text/plain"
    kind = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
    return HTTPStatus.OK, path.read_bytes(), kind.get(path.suffix, "text/plain")


@contextlib.contextmanager
def page_server() -> Iterator[PageServer]:
    """A `PageServer` on a free port of 127.0.0.1, served from a thread until exit."""
    pages: PageServer | None = None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            assert pages is not None
            try:
                pages.handle(self)
            except Exception as error:  # the test reads it as a failed request
                _send(self, HTTPStatus.INTERNAL_SERVER_ERROR, repr(error).encode(), "text/plain")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    pages = PageServer(httpd)
    thread = threading.Thread(target=httpd.serve_forever, name="page-server", daemon=True)
    thread.start()
    try:
        yield pages
    finally:
        pages.release_all()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@contextlib.asynccontextmanager
async def run_driver(
    node_dir: Path,
    chromium: Path,
    url: str,
    call: str,
    argument: Mapping[str, Any],
    deadline: float,
    then: tuple[str, Mapping[str, Any]] | None = None,
) -> AsyncIterator[NodeRun]:
    """`node driver.mjs`: opens `url` in Chromium and calls `window[call](argument)`; with
    `then` = (call, argument), it then reloads the page and calls that too. On exit, a driver
    still running gets SIGTERM (it closes its browser), then SIGKILL after 10 s."""
    node = shutil.which("node")
    if node is None:
        raise AssertionError("`node` is not on PATH: the browser tests need Node 20+")
    process = await asyncio.create_subprocess_exec(
        node,
        str(_DRIVER),
        f"--node-dir={node_dir}",
        f"--chromium={chromium}",
        f"--url={url}",
        f"--call={call}",
        f"--argument={json.dumps(argument)}",
        f"--deadline-ms={int(deadline * 1000)}",
        *(
            ()
            if then is None
            else (f"--then-call={then[0]}", f"--then-argument={json.dumps(then[1])}")
        ),
        cwd=_HERE,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    run = NodeRun(process)
    assert process.stderr is not None
    stderr_reader = asyncio.create_task(collect_lines(process.stderr, run.stderr))
    try:
        yield run
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                assert process.stdout is not None
                await process.stdout.read()  # keep reading, so it never blocks on a full pipe
                await process.wait()
                await stderr_reader
        except TimeoutError:
            process.kill()
            await process.wait()
        stderr_reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stderr_reader


def browser_records(records: Sequence[Record], kind: str, **match: Any) -> list[Record]:
    """The records of one `type` (and with the given field values), in output order."""
    return [
        record
        for record in sorted(records, key=lambda record: int(record["seq"]))
        if record["type"] == kind and all(record.get(k) == v for k, v in match.items())
    ]
