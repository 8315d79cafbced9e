"""Faye (npm `faye`, the Bayeux server for Node) with the `faye-redis` engine, run as a
benchmark peer: Bayeux long-polling at `POST /faye`.

`faye/` beside this file holds the Node side: package.json and package-lock.json pin faye,
faye-redis and the redis client faye-redis works with, and server.mjs mounts Faye on a Node HTTP
server. `running_faye` runs `npm ci` there when node_modules is missing or was installed from
another lockfile, starts `node server.mjs` (pinned to one core when asked), waits for its ready
line and for a Bayeux handshake to succeed (which proves Redis is reachable), and stops it by
PID on exit. Nothing else is installed here: `node` and `npm` must be on PATH (Debian: `apt-get
install nodejs npm`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from loadtests.bench.peers._process import http_status, stop, taskset_prefix, wait_until

__all__ = ["FAYE_DIRECTORY", "FayePeer", "ensure_node_modules", "running_faye"]

FAYE_DIRECTORY = Path(__file__).with_name("faye")
_STAMP = ".replaybus-lock-sha256"  # in node_modules: the lockfile `npm ci` installed from
_READY = re.compile(r"faye ready on (http://127\.0\.0\.1:(\d+))/faye")
_START_TIMEOUT_S = 30.0
_NPM_TIMEOUT_S = 300.0


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"the Faye peer needs {name} (Debian: apt-get install nodejs npm)")
    return found


def _lock_digest() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((FAYE_DIRECTORY / name).read_bytes())
    return digest.hexdigest()


def ensure_node_modules() -> None:
    """`npm ci` in faye/ unless node_modules was installed from this very lockfile."""
    stamp = FAYE_DIRECTORY / "node_modules" / _STAMP
    wanted = _lock_digest()
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return
    subprocess.run(
        [_tool("npm"), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=FAYE_DIRECTORY,
        check=True,
        timeout=_NPM_TIMEOUT_S,
        stdout=subprocess.DEVNULL,
    )
    stamp.write_text(wanted + "\n")


def installed_versions() -> dict[str, str]:
    """The versions node_modules holds of what the peer is made of."""
    versions = {}
    for package in ("faye", "faye-redis", "redis"):
        manifest = FAYE_DIRECTORY / "node_modules" / package / "package.json"
        versions[package] = str(json.loads(manifest.read_text())["version"])
    return versions


@dataclass(frozen=True)
class FayePeer:
    """A running Faye server. `pid` is the Node process (measure its memory)."""

    port: int
    pid: int
    versions: dict[str, str]
    node_version: str

    bayeux_path: ClassVar[str] = "/faye"
    # Faye reads a POST body as Bayeux JSON only with exactly this content type (otherwise as
    # a form with a `message` field).
    headers: ClassVar[dict[str, str]] = {"Content-Type": "application/json"}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def handshake() -> list[dict[str, Any]]:
        return [
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
            }
        ]

    @staticmethod
    def subscribe(client_id: str, channel: str) -> list[dict[str, Any]]:
        return [{"channel": "/meta/subscribe", "clientId": client_id, "subscription": channel}]

    @staticmethod
    def connect(client_id: str, timeout_ms: int | None = None) -> list[dict[str, Any]]:
        """A long-poll, held until a message comes or the server's timeout (60 s) passes;
        `timeout_ms` asks for a shorter hold (`advice.timeout`, 0: answer at once). With
        faye-redis, a poll that ends on its timeout while queued messages are being read from
        Redis loses them (README.md): `timeout_ms=0` to drain a queue is the worst case."""
        message: dict[str, Any] = {
            "channel": "/meta/connect",
            "clientId": client_id,
            "connectionType": "long-polling",
        }
        if timeout_ms is not None:
            message["advice"] = {"timeout": timeout_ms}
        return [message]

    @staticmethod
    def publish(channel: str, data: Any) -> list[dict[str, Any]]:
        """Faye takes a publish from anyone: no handshake, no clientId."""
        return [{"channel": channel, "data": data}]

    @staticmethod
    def disconnect(client_id: str) -> list[dict[str, Any]]:
        return [{"channel": "/meta/disconnect", "clientId": client_id}]


def _bayeux(port: int, messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    body = json.dumps(messages).encode()
    answered = http_status(port, "POST", FayePeer.bayeux_path, body, dict(FayePeer.headers))
    if answered is None or answered[0] != 200:
        return None
    replies: list[dict[str, Any]] = json.loads(answered[1])
    return replies


def _handshakes(port: int) -> bool:
    replies = _bayeux(port, FayePeer.handshake())
    if not replies or not replies[0].get("successful"):
        return False
    _bayeux(port, FayePeer.disconnect(str(replies[0]["clientId"])))
    return True


@contextmanager
def running_faye(
    redis_url: str, cpu: int | None, *, timeout_s: int = 60, namespace: str = "faye"
) -> Iterator[FayePeer]:
    """Faye on a free 127.0.0.1 port with the faye-redis engine on `redis_url` (keys prefixed
    with `namespace`), its Node process pinned to core `cpu` (when given), until the block
    ends. `timeout_s` is how long a /meta/connect is held without messages."""
    node = _tool("node")
    ensure_node_modules()
    node_version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="replaybus-faye-") as folder:
        log = Path(folder) / "faye.log"
        environment = {
            **os.environ,
            "FAYE_REDIS_URL": redis_url,
            "FAYE_NAMESPACE": namespace,
            "FAYE_TIMEOUT": str(timeout_s),
            "NODE_ENV": "production",
        }
        with log.open("wb") as output:
            process = subprocess.Popen(
                [*taskset_prefix(cpu), node, "server.mjs", "0"],
                cwd=FAYE_DIRECTORY,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:

            def describe() -> str:
                return "faye: " + log.read_text(errors="replace")

            wait_until(lambda: bool(_READY.search(describe())), process, _START_TIMEOUT_S, describe)
            found = _READY.search(describe())
            assert found is not None
            port = int(found.group(2))
            wait_until(lambda: _handshakes(port), process, _START_TIMEOUT_S, describe)
            yield FayePeer(port, process.pid, installed_versions(), node_version)
        finally:
            stop(process)
