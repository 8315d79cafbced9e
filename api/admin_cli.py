"""`replaybus tenants|clients|channels ...`: the admin API from a terminal.

Every command takes `--url` (REPLAYBUS_URL) and a credential: `--operator-key`
(REPLAYBUS_OPERATOR_KEY) or a tenant admin's `--token` (REPLAYBUS_TOKEN). `--json` prints the
API's JSON instead of text.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["add_admin_commands", "run_admin_command"]

_DEFAULT_URL = "http://127.0.0.1:8080"


class AdminCommandError(Exception):
    pass


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"server base URL (REPLAYBUS_URL, default {_DEFAULT_URL})")
    parser.add_argument("--operator-key", help="operator credential (REPLAYBUS_OPERATOR_KEY)")
    parser.add_argument("--token", help="a tenant admin's access token (REPLAYBUS_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")


def add_admin_commands(commands: Any) -> None:
    tenants = commands.add_parser("tenants", help="manage tenants (platform operator)")
    actions = tenants.add_subparsers(dest="action", required=True)
    for name, text in (
        ("list", "list tenants"),
        ("show", "show one tenant"),
        ("create", "create a tenant"),
        ("update", "change a tenant's settings"),
        ("suspend", "suspend a tenant: its tokens and clients stop working"),
        ("resume", "resume a suspended tenant"),
        ("delete", "delete a tenant, its clients and its retained events"),
    ):
        action = actions.add_parser(name, help=text)
        _common(action)
        if name != "list":
            action.add_argument("tenant", help="tenant id")
        if name in ("create", "update"):
            action.add_argument(
                "--set",
                action="append",
                default=[],
                metavar="NAME=VALUE",
                help="a tenant setting, e.g. publishRate=50 or corsOrigins='[\"https://a.example\"]'"
                " (VALUE is JSON, else text; null restores the default)",
            )
        if name == "delete":
            action.add_argument("--yes", action="store_true", help="confirm the deletion")

    clients = commands.add_parser("clients", help="manage a tenant's OAuth clients")
    actions = clients.add_subparsers(dest="action", required=True)
    for name, text in (
        ("list", "list the tenant's clients"),
        ("show", "show one client"),
        ("create", "create a client (its secret is shown once)"),
        ("rotate", "give a client a new secret (shown once)"),
        ("revoke", "revoke a client: its tokens stop working"),
    ):
        action = actions.add_parser(name, help=text)
        _common(action)
        action.add_argument("--tenant", required=True, help="tenant id")
        if name in ("show", "rotate", "revoke"):
            action.add_argument("client", help="client id")
        if name == "create":
            action.add_argument(
                "--scope",
                action="append",
                required=True,
                help="publish, subscribe, admin, or narrowed: publish:/event/Order* (repeatable)",
            )
            action.add_argument("--client-id", help="the client id (default: generated)")

    channels = commands.add_parser("channels", help="manage a tenant's channel definitions")
    actions = channels.add_subparsers(dest="action", required=True)
    for name, text in (
        ("list", "list the tenant's channel definitions"),
        ("show", "show a definition, its current schema and its schema versions"),
        ("define", "create or update a definition (a new schema must stay compatible)"),
        ("delete", "delete a definition and its schema history (events stay)"),
    ):
        action = actions.add_parser(name, help=text)
        _common(action)
        action.add_argument("--tenant", required=True, help="tenant id")
        if name != "list":
            action.add_argument("channel", help="channel name, e.g. /event/Order_Placed__e")
        if name == "define":
            action.add_argument("--description", help="what the channel carries")
            action.add_argument("--owner", help="who owns it")
            action.add_argument("--schema", metavar="FILE", help="payload JSON Schema (- = stdin)")
            action.add_argument(
                "--no-schema", action="store_true", help="remove the payload schema"
            )
            action.add_argument("--retention-max-age", type=float, metavar="SECONDS")
            action.add_argument("--retention-max-count", type=int, metavar="EVENTS")
            action.add_argument(
                "--force", action="store_true", help="accept a backward-incompatible schema"
            )


def _setting_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _settings(pairs: list[str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name:
            raise AdminCommandError(f"--set expects NAME=VALUE, got {pair!r}")
        settings[name] = _setting_value(value)
    return settings


def _request(
    arguments: argparse.Namespace,
    environ: Mapping[str, str],
    method: str,
    path: str,
    body: Any = None,
) -> Any:
    base = (arguments.url or environ.get("REPLAYBUS_URL") or _DEFAULT_URL).rstrip("/")
    credential = (
        arguments.operator_key
        or arguments.token
        or environ.get("REPLAYBUS_OPERATOR_KEY")
        or environ.get("REPLAYBUS_TOKEN")
    )
    if not credential:
        raise AdminCommandError(
            "no credential: pass --operator-key or --token "
            "(or set REPLAYBUS_OPERATOR_KEY or REPLAYBUS_TOKEN)"
        )
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {credential}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            problem = json.loads(error.read())
            detail = f"{problem['error']}: {problem['message']}"
        except (ValueError, KeyError, TypeError):
            detail = str(error.reason)
        raise AdminCommandError(f"{error.code} {detail}") from None
    except (urllib.error.URLError, OSError) as error:
        raise AdminCommandError(f"cannot reach {base}: {error}") from None


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _tenant_text(tenant: Mapping[str, Any]) -> str:
    status = "suspended" if tenant["suspended"] else "active"
    settings = ", ".join(f"{k}={json.dumps(v)}" for k, v in tenant["settings"].items())
    return f"{tenant['tenantId']}\t{status}\t{settings or '(server defaults)'}"


def _client_text(client: Mapping[str, Any]) -> str:
    status = "revoked" if client["revoked"] else "active"
    return f"{client['clientId']}\t{status}\t{' '.join(client['scopes'])}"


def _tenants(arguments: argparse.Namespace, environ: Mapping[str, str]) -> tuple[Any, str]:
    action = arguments.action
    if action == "list":
        result = _request(arguments, environ, "GET", "/v1/admin/tenants")
        return result, "\n".join(_tenant_text(t) for t in result["tenants"]) or "(no tenants)"
    path = "/v1/admin/tenants/" + _quote(arguments.tenant)
    if action == "create":
        body = {"tenantId": arguments.tenant, "settings": _settings(arguments.set)}
        result = _request(arguments, environ, "POST", "/v1/admin/tenants", body)
    elif action == "update":
        result = _request(arguments, environ, "PATCH", path, {"settings": _settings(arguments.set)})
    elif action in ("suspend", "resume"):
        result = _request(arguments, environ, "POST", f"{path}/{action}")
    elif action == "delete":
        if not arguments.yes:
            raise AdminCommandError(
                f"deleting {arguments.tenant} drops its clients and every retained event: "
                "add --yes to confirm"
            )
        result = _request(arguments, environ, "DELETE", path)
        return result, (
            f"deleted tenant {result['tenantId']} "
            f"({result['droppedChannels']} channels of events dropped)"
        )
    else:
        result = _request(arguments, environ, "GET", path)
    return result, _tenant_text(result)


def _clients(arguments: argparse.Namespace, environ: Mapping[str, str]) -> tuple[Any, str]:
    action = arguments.action
    path = "/v1/admin/tenants/" + _quote(arguments.tenant) + "/clients"
    if action == "list":
        result = _request(arguments, environ, "GET", path)
        return result, "\n".join(_client_text(c) for c in result["clients"]) or "(no clients)"
    if action == "create":
        body: dict[str, Any] = {"scopes": arguments.scope}
        if arguments.client_id:
            body["clientId"] = arguments.client_id
        result = _request(arguments, environ, "POST", path, body)
    else:
        client_path = f"{path}/{_quote(arguments.client)}"
        verb = "GET" if action == "show" else "POST"
        suffix = "" if action == "show" else f"/{action}"
        result = _request(arguments, environ, verb, client_path + suffix)
    text = _client_text(result)
    if "clientSecret" in result:
        text += f"\nclient_secret: {result['clientSecret']}  (shown once: store it now)"
    return result, text


def _schema_document(source: str) -> Any:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        return json.loads(text)
    except OSError as error:
        raise AdminCommandError(f"cannot read the schema: {error}") from None
    except json.JSONDecodeError as error:
        raise AdminCommandError(f"the schema is not JSON: {error}") from None


def _channel_text(channel: Mapping[str, Any]) -> str:
    schema = channel["schema"]
    version = f"schema v{schema['version']} {schema['schemaId']}" if schema else "no schema"
    owner = f"\towner {channel['owner']}" if channel["owner"] else ""
    return f"{channel['channel']}\t{version}{owner}"


def _channels(arguments: argparse.Namespace, environ: Mapping[str, str]) -> tuple[Any, str]:
    base = "/v1/admin/tenants/" + _quote(arguments.tenant) + "/channels"
    if arguments.action == "list":
        result = _request(arguments, environ, "GET", base)
        return result, "\n".join(_channel_text(c) for c in result["channels"]) or "(none)"
    path = base + "/" + urllib.parse.quote(arguments.channel.lstrip("/"), safe="/")
    if arguments.action == "show":
        result = _request(arguments, environ, "GET", path)
        versions = ", ".join(f"v{v['version']} {v['schemaId']}" for v in result["versions"])
        return result, _channel_text(result) + (f"\nversions: {versions}" if versions else "")
    if arguments.action == "delete":
        result = _request(arguments, environ, "DELETE", path)
        return result, f"deleted the definition of {result['channel']}"
    body: dict[str, Any] = {}
    for field in ("description", "owner"):
        if getattr(arguments, field) is not None:
            body[field] = getattr(arguments, field)
    if arguments.retention_max_age is not None or arguments.retention_max_count is not None:
        body["retention"] = {
            "maxAge": arguments.retention_max_age,
            "maxCount": arguments.retention_max_count,
        }
    if arguments.schema is not None:
        body["schema"] = _schema_document(arguments.schema)
    elif arguments.no_schema:
        body["schema"] = None
    if arguments.force:
        body["force"] = True
    result = _request(arguments, environ, "PUT", path, body)
    text = _channel_text(result)
    if result["forcedProblems"]:
        text += "\nforced despite: " + "; ".join(result["forcedProblems"])
    return result, text


def run_admin_command(arguments: argparse.Namespace, environ: Mapping[str, str]) -> int:
    try:
        handler = {"tenants": _tenants, "clients": _clients, "channels": _channels}[
            arguments.command
        ]
        result, text = handler(arguments, environ)
    except AdminCommandError as error:
        print(f"replaybus: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if arguments.json else text)
    return 0
