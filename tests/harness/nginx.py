"""A real nginx (Debian's package) as a round-robin load balancer in front of replaybus nodes.

nginx runs in the foreground (`daemon off;`) from a configuration generated in a temporary
folder, listens on a free 127.0.0.1 port and is stopped by its PID. The configuration is what a
replaybus deployment needs from a proxy: plain round robin (no stickiness: any node serves any
request), unbuffered responses for Server-Sent Events, a read timeout above the Bayeux hold,
HTTP/1.1 keep-alive to the nodes and, when a node is down, failing over to the next one
(`proxy_next_upstream error timeout`; nginx never repeats a POST that reached a node).

If no `nginx` is installed, Debian's package is installed when running as root with apt-get
available; otherwise the harness stops with a message saying what to install.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.harness.redis import free_port

__all__ = ["RunningNginx", "descendants", "nginx_binary", "nginx_config", "running_nginx"]

_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 15.0
_SEARCHED = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


def _find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return next((path for path in _SEARCHED if os.access(path, os.X_OK)), None)


def nginx_binary() -> str:
    found = _find_nginx()
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=environment)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], check=True, env=environment)
        found = _find_nginx()
        if found:
            return found
    raise RuntimeError(
        "the load-balancer tests need nginx: install it (Debian: apt-get install nginx)"
    )


@dataclass(frozen=True)
class RunningNginx:
    port: int
    directory: Path
    upstreams: tuple[str, ...]
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        log = self.directory / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""


def _upstream_address(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        raise ValueError(f"an upstream must be http://host:port, not {url!r}")
    if parts.hostname not in ("127.0.0.1", "localhost"):
        raise ValueError(f"upstreams stay on loopback: {url!r}")
    return f"127.0.0.1:{parts.port}"


def _user_directive() -> str:
    """As root, nginx's workers would switch to `nobody`, who cannot enter the private
    temporary folder: keep them as the current user. Otherwise the directive is not allowed."""
    if os.geteuid() != 0:
        return ""
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return f"user {user} {group};"


def nginx_config(
    directory: Path, port: int, upstreams: Sequence[str], *, read_timeout_s: float
) -> str:
    """The configuration: one upstream of `upstreams` (round robin, the default balancing, with
    nothing making clients sticky) behind `127.0.0.1:port`; every path under `directory`."""
    servers = "\n".join(
        f"        server {_upstream_address(url)} max_fails=1 fail_timeout=5s;" for url in upstreams
    )
    read_timeout = max(1, round(read_timeout_s))
    return f"""\
{_user_directive()}
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path {directory}/client_body_temp;
    proxy_temp_path {directory}/proxy_temp;
    fastcgi_temp_path {directory}/fastcgi_temp;
    uwsgi_temp_path {directory}/uwsgi_temp;
    scgi_temp_path {directory}/scgi_temp;
    client_max_body_size 8m;
    keepalive_requests 100000;

    upstream replaybus {{
        # Round robin (nginx's default); no ip_hash, hash or sticky: any node, any request.
{servers}
        keepalive 128;
        keepalive_requests 100000;
        keepalive_timeout 60s;
    }}

    server {{
        listen 127.0.0.1:{port};

        location / {{
            proxy_pass http://replaybus;
            # HTTP/1.1 with keep-alive to the nodes (no "Connection: close" passed on).
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # Server-Sent Events: pass every byte on at once.
            proxy_buffering off;
            proxy_cache off;
            # Above the Bayeux hold (and the SSE heartbeat), so idle long polls are not cut.
            proxy_read_timeout {read_timeout}s;
            proxy_send_timeout {read_timeout}s;
            proxy_connect_timeout 2s;
            # A node that refuses or drops a connection: try the next one. nginx does not
            # repeat a POST that already reached a node (no non_idempotent).
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries {len(upstreams)};
        }}
    }}
}}
"""


def descendants(pid: int) -> list[int]:
    """Every living descendant of `pid` (Linux /proc), children before grandchildren."""
    found: list[int] = []
    pending = [pid]
    for _ in range(10_000):
        if not pending:
            break
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                children = [int(child) for child in task.read_text().split()]
            except OSError:
                continue
            found.extend(children)
            pending.extend(children)
    return found


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, directory: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = directory / "error.log"
            raise RuntimeError("nginx exited:\n" + (log.read_text() if log.exists() else ""))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)  # polling another process's listening socket: nothing to await
    raise RuntimeError(f"nginx did not listen on 127.0.0.1:{port} within {_START_TIMEOUT_S} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to nginx's master (its fast shutdown stops the workers); if it does not stop,
    SIGKILL to the master and the workers it started, by PID."""
    if process.poll() is not None:
        return
    workers = descendants(process.pid)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        for worker in workers:
            with suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
        process.wait()


@contextmanager
def running_nginx(
    upstreams: Sequence[str], *, read_timeout_s: float = 130.0
) -> Iterator[RunningNginx]:
    """nginx balancing over `upstreams` (base URLs such as `http://127.0.0.1:8080`) on a free
    127.0.0.1 port, in a fresh temporary folder; stopped on exit. `read_timeout_s` must stay
    above the nodes' Bayeux hold (`REPLAYBUS_BAYEUX_TIMEOUT`, 110 s by default)."""
    if not upstreams:
        raise ValueError("nginx needs at least one upstream")
    binary = nginx_binary()
    with tempfile.TemporaryDirectory(prefix="replaybus-nginx-") as folder:
        directory = Path(folder)
        port = free_port()
        config = directory / "nginx.conf"
        config.write_text(nginx_config(directory, port, upstreams, read_timeout_s=read_timeout_s))
        process = subprocess.Popen(
            [
                binary,
                "-p",
                str(directory),
                "-c",
                str(config),
                "-e",
                str(directory / "error.log"),
                "-g",
                "daemon off;",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_until_listening(process, port, directory)
            yield RunningNginx(port, directory, tuple(upstreams), process)
        finally:
            _stop(process)
