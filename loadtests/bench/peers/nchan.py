"""Nchan (the nginx pub/sub module, Debian's `libnginx-mod-nchan`) with Redis storage, run as a
benchmark peer: publish with `POST /pub/<channel>`, subscribe with an EventSource
`GET /sub/<channel>`, replay from the oldest retained message with `Last-Event-ID: 0:0`.

Nothing is installed here: nginx and the module must be there (Debian: `apt-get install nginx
libnginx-mod-nchan`), else `running_nchan` says so. nginx runs in the foreground from a
configuration written into a temporary folder, on a free 127.0.0.1 port, with one worker
process, optionally pinned to one core, and is stopped by PID on exit.

Redis is used the way Nchan documents for sharing channels between servers: an `upstream`
with `nchan_redis_server`, `nchan_redis_pass` in the locations (Nchan's documentation
discourages the older `nchan_use_redis` with `nchan_redis_url`), storage mode
`distributed` (every message goes through Redis and is stored there; other Nchan servers on
the same Redis see the same channels). Each channel keeps up to `buffer_length` messages for
`message_timeout_s` seconds (50 000 for 30 minutes by default), so a replay of 20 000 messages
from the oldest can be measured minutes after publishing them.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from loadtests.bench.peers._process import http_status, stop, taskset_prefix, wait_until
from tests.harness.nginx import descendants
from tests.harness.redis import free_port

__all__ = [
    "BUFFER_LENGTH",
    "MESSAGE_TIMEOUT_S",
    "REPLAY_FROM_OLDEST",
    "NchanPeer",
    "nchan_config",
    "nchan_module_path",
    "nginx_binary",
    "running_nchan",
]

BUFFER_LENGTH = 50_000
MESSAGE_TIMEOUT_S = 30 * 60
# Nchan's message ids are `<time>:<tag>`; time 0 is its "oldest" id (NCHAN_OLDEST_MSGID_TIME),
# so `Last-Event-ID: 0:0` (or `?last_event_id=0:0`) starts at the oldest retained message.
REPLAY_FROM_OLDEST = "0:0"

_MODULE_FILE = "ngx_nchan_module.so"
# Debian's nginx packages: the module itself is /usr/lib/nginx/modules/ngx_nchan_module.so and
# this file says `load_module modules/ngx_nchan_module.so;` (relative to nginx's prefix,
# /usr/share/nginx, whose modules/ is a link to /usr/lib/nginx/modules).
_MODULE_CONF = Path("/usr/share/nginx/modules-available/mod-nchan.conf")
_NGINX_SEARCHED = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
_CHANNEL = re.compile(r"[A-Za-z0-9_.~!$()@-]+(?:/[A-Za-z0-9_.~!$()@-]+)*")
_VERSION = re.compile(r"nchan version: (\S+)")
_READY_PROBE = "/pub/replaybus-bench-ready-probe"
_START_TIMEOUT_S = 30.0


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (path for path in _NGINX_SEARCHED if os.access(path, os.X_OK)), None
    )
    if found is None:
        raise RuntimeError("the Nchan peer needs nginx (Debian: apt-get install nginx)")
    return found


def _build_options(binary: str) -> dict[str, str]:
    """`--name=value` options nginx was configured with (`nginx -V` prints them on stderr)."""
    printed = subprocess.run([binary, "-V"], capture_output=True, text=True, check=True)
    options = {}
    for word in (printed.stderr + printed.stdout).split():
        name, equals, value = word.partition("=")
        if equals and name.startswith("--"):
            options[name] = value
    return options


def nchan_module_path(binary: str | None = None) -> Path:
    """The Nchan dynamic module for this nginx: `REPLAYBUS_NCHAN_MODULE` if set, else the path
    Debian's mod-nchan.conf loads, else `ngx_nchan_module.so` in nginx's modules path."""
    override = os.environ.get("REPLAYBUS_NCHAN_MODULE")
    if override:
        return Path(override)
    options = _build_options(binary or nginx_binary())
    prefix = Path(options.get("--prefix", "/usr/share/nginx"))
    candidates = []
    if _MODULE_CONF.exists():
        match = re.search(r"load_module\s+([^;\s]+)\s*;", _MODULE_CONF.read_text())
        if match:
            candidates.append(prefix / match.group(1))  # an absolute path stays absolute
    if "--modules-path" in options:
        candidates.append(Path(options["--modules-path"]) / _MODULE_FILE)
    candidates += [prefix / "modules" / _MODULE_FILE, Path("/usr/lib/nginx/modules", _MODULE_FILE)]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    raise RuntimeError(
        "the Nchan peer needs nginx's Nchan module (Debian: apt-get install libnginx-mod-nchan);"
        f" looked for {', '.join(str(path) for path in candidates)}"
    )


def _channel_id(channel: str) -> str:
    """A Bayeux-style channel (`/orders`, `/event/Load__e`) or a bare one (`orders`), as the
    path tail Nchan takes for the channel id."""
    tail = channel.strip("/")
    if not _CHANNEL.fullmatch(tail) or ".." in tail.split("/"):
        raise ValueError(f"not a channel name for Nchan's locations: {channel!r}")
    return tail


@dataclass(frozen=True)
class NchanPeer:
    """A running Nchan. `pid` is nginx's only worker process (the one holding connections,
    messages and Redis clients: measure its memory); `master_pid` is the process started."""

    port: int
    directory: Path
    master_pid: int
    pid: int
    version: str
    buffer_length: int
    message_timeout_s: int

    # Nchan's id for the oldest retained message, for `Last-Event-ID` or `?last_event_id=`.
    replay_from_oldest: ClassVar[str] = REPLAY_FROM_OLDEST
    # What an EventSource subscriber sends (Nchan picks EventSource by this Accept header).
    subscribe_headers: ClassVar[dict[str, str]] = {"Accept": "text/event-stream"}
    # Nchan's own counters (stored messages, subscribers, Redis pending commands, version).
    status_path: ClassVar[str] = "/nchan_status"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def publish_path(self, channel: str) -> str:
        """POST the message body here (any bytes; one line of JSON keeps SSE `data:` whole)."""
        return f"/pub/{_channel_id(channel)}"

    def subscribe_path(self, channel: str) -> str:
        """GET with `Accept: text/event-stream`: new messages only (first message `newest`);
        with `live_headers`, `replay_headers` or a received id as `Last-Event-ID`, from there."""
        return f"/sub/{_channel_id(channel)}"

    def replay_path(self, channel: str) -> str:
        """The subscribe path asking to start at the oldest retained message, for clients that
        cannot send `Last-Event-ID` (the header does the same on `subscribe_path`)."""
        return f"{self.subscribe_path(channel)}?last_event_id={REPLAY_FROM_OLDEST}"

    def replay_headers(self) -> dict[str, str]:
        """Headers for `subscribe_path` that start the stream at the oldest retained message."""
        return {**self.subscribe_headers, "Last-Event-ID": REPLAY_FROM_OLDEST}

    def last_message_id(self, channel: str) -> str:
        """The id of the channel's newest message (`GET` on the publisher location), or
        `0:0` when the channel has none: where a subscriber starts to miss nothing from now."""
        answered = http_status(
            self.port, "GET", self.publish_path(channel), headers={"Accept": "text/json"}
        )
        if answered is None or answered[0] not in (200, 404):
            raise RuntimeError(f"Nchan's channel info for {channel!r}: {answered}")
        if answered[0] == 404:
            return REPLAY_FROM_OLDEST
        return str(json.loads(answered[1])["last_message_id"])

    def live_headers(self, channel: str) -> dict[str, str]:
        """Headers for `subscribe_path` that deliver every message published after this call.
        A subscriber without Last-Event-ID (`newest`) is answered `: hi` before Nchan has
        subscribed in Redis, and often misses messages published right after that line."""
        return {**self.subscribe_headers, "Last-Event-ID": self.last_message_id(channel)}

    def error_log(self) -> str:
        log = self.directory / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""


def _user_directive() -> str:
    """As root, nginx's worker would switch to `nobody`, who cannot enter the private temporary
    folder: keep it as the current user (the directive is refused when not root)."""
    if os.geteuid() != 0:
        return ""
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return f"user {user} {group};"


def nchan_config(
    directory: Path,
    port: int,
    redis_url: str,
    module: Path,
    *,
    buffer_length: int = BUFFER_LENGTH,
    message_timeout_s: int = MESSAGE_TIMEOUT_S,
) -> str:
    """The nginx.conf: Nchan on 127.0.0.1:`port`, channels stored in Redis at `redis_url`."""
    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"Nchan needs a redis:// URL, not {redis_url!r}")
    if buffer_length < 1 or message_timeout_s < 1:
        raise ValueError("Nchan's peer keeps messages: buffer_length and timeout must be > 0")
    # Up to the hard limit on open files (even root may not raise it in a container).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    files = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    connections = max(1024, files - 512)  # each subscriber is one connection, plus Redis's
    return f"""\
load_module {module};
{_user_directive()}
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {files};
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;

events {{
    worker_connections {connections};
}}

http {{
    access_log off;
    client_body_temp_path {directory}/client_body_temp;
    proxy_temp_path {directory}/proxy_temp;
    fastcgi_temp_path {directory}/fastcgi_temp;
    uwsgi_temp_path {directory}/uwsgi_temp;
    scgi_temp_path {directory}/scgi_temp;
    # A load generator keeps its connections: nginx's default closes one after 1000 requests.
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_max_body_size 1m;

    # Nchan's shared memory: its local cache of Redis-stored channels and messages, and the
    # worker's bookkeeping (128M is Nchan's default, stated here to be seen).
    nchan_shared_memory_size 128M;

    upstream nchan_redis {{
        nchan_redis_server {redis_url};
        nchan_redis_storage_mode distributed;
        # Keys are `nchan:{{channel:/<id>}}...`, apart from anything else in the same Redis.
        nchan_redis_namespace nchan;
    }}

    server {{
        listen 127.0.0.1:{port} backlog=4096;

        # POST publishes the request body to the channel; GET tells the channel's counts.
        location ~ ^/pub/(.+)$ {{
            nchan_publisher http;
            nchan_channel_id $1;
            nchan_redis_pass nchan_redis;
            # Kept per channel: the last {buffer_length} messages, each for {message_timeout_s} s.
            nchan_message_buffer_length {buffer_length};
            nchan_message_timeout {message_timeout_s}s;
        }}

        # EventSource only. Without Last-Event-ID a subscriber waits for new messages
        # (`newest`); `Last-Event-ID: 0:0` or `?last_event_id=0:0` starts at the oldest kept;
        # the id of a received message resumes after it.
        location ~ ^/sub/(.+)$ {{
            nchan_subscriber eventsource;
            nchan_channel_id $1;
            nchan_redis_pass nchan_redis;
            nchan_subscriber_first_message newest;
            nchan_subscriber_timeout 0;
        }}

        location = /nchan_status {{
            nchan_stub_status;
        }}
    }}
}}
"""


def _worker(master_pid: int) -> int | None:
    workers = []
    for pid in descendants(master_pid):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"nginx: worker process"):
            workers.append(pid)
    return workers[0] if len(workers) == 1 else None


@contextmanager
def running_nchan(
    redis_url: str,
    cpu: int | None,
    *,
    buffer_length: int = BUFFER_LENGTH,
    message_timeout_s: int = MESSAGE_TIMEOUT_S,
) -> Iterator[NchanPeer]:
    """Nchan on a free 127.0.0.1 port with its channels in Redis at `redis_url`, nginx's master
    and worker pinned to core `cpu` (when given), until the block ends."""
    binary = nginx_binary()
    module = nchan_module_path(binary)
    with tempfile.TemporaryDirectory(prefix="replaybus-nchan-") as folder:
        directory = Path(folder)
        port = free_port()
        config = directory / "nginx.conf"
        config.write_text(
            nchan_config(
                directory,
                port,
                redis_url,
                module,
                buffer_length=buffer_length,
                message_timeout_s=message_timeout_s,
            )
        )
        log = directory / "error.log"

        def describe() -> str:
            return "nginx (Nchan): " + (log.read_text(errors="replace") if log.exists() else "")

        checked = subprocess.run(
            [binary, "-t", "-q", "-p", str(directory), "-c", str(config), "-e", str(log)],
            capture_output=True,
            text=True,
        )
        if checked.returncode != 0:
            raise RuntimeError(f"nginx refused the Nchan configuration:\n{checked.stderr}")
        process = subprocess.Popen(
            [
                *taskset_prefix(cpu),
                binary,
                "-p",
                str(directory),
                "-c",
                str(config),
                "-e",
                str(log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(
                lambda: _worker(process.pid) is not None, process, _START_TIMEOUT_S, describe
            )
            # A publisher GET asks Redis for the channel: 404 (no such channel) means nginx
            # listens and Nchan reached Redis.
            wait_until(
                lambda: (http_status(port, "GET", _READY_PROBE) or (0, b""))[0] == 404,
                process,
                _START_TIMEOUT_S,
                describe,
            )
            status = http_status(port, "GET", NchanPeer.status_path)
            found = _VERSION.search(status[1].decode(errors="replace")) if status else None
            worker = _worker(process.pid)
            assert worker is not None
            yield NchanPeer(
                port=port,
                directory=directory,
                master_pid=process.pid,
                pid=worker,
                version=found.group(1) if found else "unknown",
                buffer_length=buffer_length,
                message_timeout_s=message_timeout_s,
            )
        finally:
            stop(process, also=descendants(process.pid))
