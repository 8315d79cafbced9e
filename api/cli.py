"""The `replaybus` command. Only this entry point reads the environment."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from api.admin_cli import add_admin_commands, run_admin_command
from api.app import create_app
from api.logs import configure_logging
from api.server import ReplaybusServer, bind_socket, read_timeout_protocol
from api.services import Lifecycle
from api.supervisor import supervise
from app.credentials import generate_client_id, generate_secret
from app.errors import CatalogUnavailable
from app.metrics import MULTIPROCESS_DIR
from app.settings import Settings, SettingsError
from storage.postgres import migrate as migrate_catalog

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replaybus", description="Multi-tenant platform-events service."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a replaybus node")
    serve.add_argument("--host", help="interface to bind (REPLAYBUS_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind, 0 = any free (REPLAYBUS_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (REPLAYBUS_WORKERS)")
    serve.add_argument(
        "--log-level", help="critical|error|warning|info|debug (REPLAYBUS_LOG_LEVEL)"
    )
    commands.add_parser(
        "migrate", help="apply pending catalog migrations to REPLAYBUS_DATABASE_URL (idempotent)"
    )
    add_admin_commands(commands)
    try:
        from replaybus_client.cli import add_stream_commands
    except ImportError:  # the client distribution (clients/python) is not installed
        pass
    else:
        add_stream_commands(commands)
    return parser


def _say(text: str) -> None:
    print(text, flush=True)


def _uvicorn_config(settings: Settings, app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        loop="uvloop",
        http=read_timeout_protocol(settings.header_timeout, settings.body_timeout),
        ws="none",
        lifespan="on",
        log_config=None,
        log_level=settings.log_level,
        access_log=False,
        # The app applies X-Forwarded-* itself (api.forwarded), keeping the TCP peer.
        proxy_headers=False,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace)),
        server_header=False,
        workers=settings.workers,
        # Long-polling clients reuse pooled connections; announcing the idle timeout lets them
        # retire a connection before the server closes it under a request in flight.
        timeout_keep_alive=round(settings.keep_alive),
        headers=[("Keep-Alive", f"timeout={round(settings.keep_alive)}")],
    )


def _app(settings: Settings, lifecycle: Lifecycle) -> Any:
    # Set by the supervisor for its workers (or by the operator): their shared metrics folder.
    return create_app(settings, lifecycle=lifecycle, metrics_dir=os.environ.get(MULTIPROCESS_DIR))


def _run_worker(settings: Settings, sockets: list[socket.socket]) -> None:
    """One worker process (spawned by the supervisor): its own app on the shared socket."""
    configure_logging(settings)
    lifecycle = Lifecycle()
    config = _uvicorn_config(
        settings,
        create_app(settings, lifecycle=lifecycle, metrics_dir=os.environ.get(MULTIPROCESS_DIR)),
    )
    ReplaybusServer(config, lifecycle).run(sockets=sockets)


def _shared_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem.decode()


def serve(settings: Settings) -> int:
    # Credentials are generated and printed only on the embedded dev defaults (the in-memory
    # catalog, gone with the process); a PostgreSQL catalog gets what it is explicitly given.
    dev = settings.database_url is None
    generated = dev and settings.bootstrap_client_id is None
    if generated:
        settings = settings.replace(
            bootstrap_client_id=generate_client_id(), bootstrap_client_secret=generate_secret()
        )
    generated_operator_key = generated and settings.operator_key is None
    if generated_operator_key:
        settings = settings.replace(operator_key=generate_secret())
    if settings.workers > 1 and settings.signing_key is None and settings.signing_key_file is None:
        # Every worker must verify every other's tokens: one key for all of them. Other nodes
        # need the same key, so clusters configure REPLAYBUS_SIGNING_KEY themselves.
        settings = settings.replace(signing_key=_shared_key_pem())
    configure_logging(settings)
    sock = bind_socket(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    base = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"

    def announce() -> None:
        _say(f"replaybus listening on {base}")
        if settings.bootstrap_client_id is not None:
            _say(f"  tenant:        {settings.bootstrap_tenant}")
            _say(f"  client_id:     {settings.bootstrap_client_id}")
            if generated:
                _say(f"  client_secret: {settings.bootstrap_client_secret}  (shown once)")
            else:
                _say("  client_secret: from REPLAYBUS_BOOTSTRAP_CLIENT_SECRET")
        if not dev:
            _say("  catalog:       PostgreSQL; a bootstrap client or user is created only if")
            _say("                 absent, never changed; other credentials come from")
            _say("                 `replaybus clients create` or /v1/admin")
        if generated_operator_key:
            _say(f"  operator key:  {settings.operator_key}  (for /v1/admin and the CLI)")
        elif settings.operator_key is not None:
            _say("  operator key:  from REPLAYBUS_OPERATOR_KEY")
        else:
            _say("  operator key:  not set (REPLAYBUS_OPERATOR_KEY): /v1/admin serves tenant")
            _say("                 admin clients only")
        if dev:
            _say(f"  get a token:   curl -s {base}/services/oauth2/token \\")
            _say("                   -d grant_type=client_credentials \\")
            _say("                   -d client_id=<client_id> -d client_secret=<client_secret>")

    if settings.workers > 1:
        announce()  # connections wait in the listening socket's backlog for the workers
        supervise(settings.workers, partial(_run_worker, settings), sock)
        return 0
    lifecycle = Lifecycle()
    config = _uvicorn_config(
        settings,
        create_app(settings, lifecycle=lifecycle, metrics_dir=os.environ.get(MULTIPROCESS_DIR)),
    )
    server = ReplaybusServer(config, lifecycle, on_started=announce)
    server.run(sockets=[sock])
    return 0 if server.started else 1


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    if arguments.command in ("tenants", "clients", "channels"):
        return run_admin_command(arguments, os.environ)
    if arguments.command in ("token", "publish", "tail"):
        from replaybus_client.cli import run_stream_command

        return run_stream_command(arguments, os.environ)
    overrides = {
        name: getattr(arguments, name, None) for name in ("host", "port", "workers", "log_level")
    }
    try:
        settings = Settings.from_env(os.environ, overrides)
    except SettingsError as error:
        print(f"replaybus: invalid setting: {error}", file=sys.stderr)
        return 2
    if arguments.command == "migrate":
        return migrate(settings)
    return serve(settings)


def migrate(settings: Settings) -> int:
    if settings.database_url is None:
        print("replaybus: set REPLAYBUS_DATABASE_URL to the catalog database", file=sys.stderr)
        return 2
    run = migrate_catalog(
        settings.database_url,
        connect_timeout=settings.database_connect_timeout,
        command_timeout=settings.database_command_timeout,
    )
    try:
        applied = asyncio.run(run)
    except CatalogUnavailable as error:
        print(f"replaybus: migration failed: {error.message}", file=sys.stderr)
        return 1
    _say("replaybus: applied " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
