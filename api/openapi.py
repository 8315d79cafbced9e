"""`GET /openapi.json`: the OpenAPI 3.1 description of the native `/v1` API."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.responses import JSONBytesResponse
from app.tenancy import describe_settings

__all__ = ["document", "openapi"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "invalid request",
        401: "missing, invalid or expired token",
        403: "forbidden (scope, suspended tenant, operator-only)",
        404: "no such tenant, client or channel",
        409: "already exists, or the resource's state forbids it",
        413: "too large",
        503: "engine or catalog unavailable (Retry-After)",
    }
    return {str(status): _json(_ref("Error"), texts[status]) for status in statuses}


def _operation(
    summary: str,
    ok: tuple[int, dict[str, Any]] | None,
    errors: tuple[int, ...],
    body: dict[str, Any] | None = None,
    parameters: tuple[str, ...] = (),
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": _errors(*errors)}
    if ok is not None:
        operation["responses"][str(ok[0])] = _json(ok[1], "success")
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    if parameters:
        operation["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in parameters
        ]
    return operation


_ADMIN_ERRORS = (400, 401, 403, 404, 503)
_TENANT = ("tenant",)
_CLIENT = ("tenant", "client")
_ANY_OBJECT: dict[str, Any] = {"type": "object"}


def _schemas() -> dict[str, Any]:
    settings_properties = {
        name: {"type": kind, "description": text}
        if kind != "array"
        else {"type": "array", "items": {"type": "string"}, "description": text}
        for name, kind, text in describe_settings()
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
        },
        "TenantSettings": {
            "type": "object",
            "additionalProperties": False,
            "description": "Absent or null: the server-wide default.",
            "properties": settings_properties,
        },
        "Tenant": {
            "type": "object",
            "required": ["tenantId", "suspended", "settings"],
            "properties": {
                "tenantId": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                "suspended": {"type": "boolean"},
                "settings": _ref("TenantSettings"),
            },
        },
        "Client": {
            "type": "object",
            "required": ["clientId", "tenantId", "scopes", "revoked", "jwtBearer"],
            "properties": {
                "clientId": {"type": "string"},
                "tenantId": {"type": "string"},
                "scopes": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "publish, subscribe, admin, or publish:/event/Order* style",
                },
                "revoked": {"type": "boolean"},
                "jwtBearer": {"type": "boolean"},
            },
        },
        "SchemaVersion": {
            "type": "object",
            "required": ["schemaId", "channel", "version", "schema"],
            "properties": {
                "schemaId": {"type": "string"},
                "channel": {"type": "string"},
                "version": {"type": "integer"},
                "schema": {"description": "the JSON Schema (draft 2020-12) document"},
            },
        },
        "ChannelDefinition": {
            "type": "object",
            "required": ["channel", "description", "owner", "retention", "schema"],
            "properties": {
                "channel": {"type": "string"},
                "description": {"type": "string"},
                "owner": {"type": "string"},
                "retention": {
                    "type": "object",
                    "properties": {
                        "maxAge": {"type": ["number", "null"]},
                        "maxCount": {"type": ["integer", "null"]},
                    },
                },
                "schema": {"oneOf": [_ref("SchemaVersion"), {"type": "null"}]},
            },
        },
        "IssuedClient": {
            "allOf": [
                _ref("Client"),
                {
                    "type": "object",
                    "required": ["clientSecret"],
                    "properties": {
                        "clientSecret": {"type": "string", "description": "shown this once"}
                    },
                },
            ]
        },
    }


def _paths() -> dict[str, Any]:
    tenant = "/v1/admin/tenants/{tenant}"
    client = tenant + "/clients/{client}"
    tenants_list = {
        "type": "object",
        "properties": {"tenants": {"type": "array", "items": _ref("Tenant")}},
    }
    clients_list = {
        "type": "object",
        "properties": {"clients": {"type": "array", "items": _ref("Client")}},
    }
    new_tenant = {
        "type": "object",
        "required": ["tenantId"],
        "properties": {"tenantId": {"type": "string"}, "settings": _ref("TenantSettings")},
    }
    new_client = {
        "type": "object",
        "required": ["scopes"],
        "properties": {
            "scopes": {"type": "array", "items": {"type": "string"}},
            "clientId": {"type": "string"},
            "jwtPublicKey": {"type": "string", "description": "PEM; enables the JWT-bearer grant"},
        },
    }
    deleted = {
        "type": "object",
        "properties": {
            "tenantId": {"type": "string"},
            "deleted": {"type": "boolean"},
            "droppedChannels": {"type": "integer"},
        },
    }
    channel = ("channel",)
    definition = tenant + "/channels/{channel}"
    channels_list = {
        "type": "object",
        "properties": {"channels": {"type": "array", "items": _ref("ChannelDefinition")}},
    }
    define = {
        "type": "object",
        "properties": {
            "description": {"type": "string"},
            "owner": {"type": "string"},
            "retention": {"type": ["object", "null"]},
            "schema": {"description": "JSON Schema (draft 2020-12), or null to remove it"},
            "force": {"type": "boolean", "description": "accept a backward-incompatible schema"},
        },
    }
    return {
        tenant + "/channels": {
            "get": _operation(
                "List a tenant's channel definitions",
                (200, channels_list),
                _ADMIN_ERRORS,
                parameters=_TENANT,
            )
        },
        definition: {
            "put": _operation(
                "Create or update a channel definition; a new schema must be backward "
                "compatible unless forced (409 incompatible_schema lists the problems)",
                (200, _ref("ChannelDefinition")),
                (*_ADMIN_ERRORS, 409),
                define,
                ("tenant", "channel"),
            ),
            "get": _operation(
                "Show a channel definition with its schema versions",
                (200, _ref("ChannelDefinition")),
                _ADMIN_ERRORS,
                parameters=("tenant", "channel"),
            ),
            "delete": _operation(
                "Delete a channel definition and its schema history (events stay)",
                (200, _ANY_OBJECT),
                _ADMIN_ERRORS,
                parameters=("tenant", "channel"),
            ),
        },
        "/v1/channels/{channel}/schema": {
            "get": _operation(
                "The channel's current payload schema",
                (200, _ref("SchemaVersion")),
                (401, 403, 404, 503),
                parameters=channel,
            )
        },
        "/v1/admin/tenants": {
            "get": _operation(
                "List tenants (a tenant admin sees its own)", (200, tenants_list), _ADMIN_ERRORS
            ),
            "post": _operation(
                "Create a tenant (operator)",
                (201, _ref("Tenant")),
                (*_ADMIN_ERRORS, 409),
                new_tenant,
            ),
        },
        tenant: {
            "get": _operation(
                "Show a tenant", (200, _ref("Tenant")), _ADMIN_ERRORS, parameters=_TENANT
            ),
            "patch": _operation(
                "Change a tenant's settings (operator)",
                (200, _ref("Tenant")),
                _ADMIN_ERRORS,
                {"type": "object", "properties": {"settings": _ref("TenantSettings")}},
                _TENANT,
            ),
            "delete": _operation(
                "Delete a tenant, its clients and its retained events (operator)",
                (200, deleted),
                _ADMIN_ERRORS,
                parameters=_TENANT,
            ),
        },
        tenant + "/suspend": {
            "post": _operation(
                "Suspend a tenant (operator)",
                (200, _ref("Tenant")),
                _ADMIN_ERRORS,
                parameters=_TENANT,
            )
        },
        tenant + "/resume": {
            "post": _operation(
                "Resume a tenant (operator)",
                (200, _ref("Tenant")),
                _ADMIN_ERRORS,
                parameters=_TENANT,
            )
        },
        tenant + "/clients": {
            "get": _operation(
                "List a tenant's clients", (200, clients_list), _ADMIN_ERRORS, parameters=_TENANT
            ),
            "post": _operation(
                "Create a client; its secret is shown once",
                (201, _ref("IssuedClient")),
                (*_ADMIN_ERRORS, 409),
                new_client,
                _TENANT,
            ),
        },
        client: {
            "get": _operation(
                "Show a client", (200, _ref("Client")), _ADMIN_ERRORS, parameters=_CLIENT
            )
        },
        client + "/rotate": {
            "post": _operation(
                "Give a client a new secret (shown once)",
                (200, _ref("IssuedClient")),
                (*_ADMIN_ERRORS, 409),
                parameters=_CLIENT,
            )
        },
        client + "/revoke": {
            "post": _operation(
                "Revoke a client: new tokens at once, issued ones within the catalog cache TTL",
                (200, _ref("Client")),
                _ADMIN_ERRORS,
                parameters=_CLIENT,
            )
        },
        "/v1/oauth/token": {
            "post": {
                "summary": "OAuth 2.0 token endpoint (all grants)",
                "requestBody": {
                    "content": {"application/x-www-form-urlencoded": {"schema": _ANY_OBJECT}}
                },
                "responses": {
                    "200": _json(_ANY_OBJECT, "an access token"),
                    "400": _json(_ANY_OBJECT, "OAuth error"),
                    "401": _json(_ANY_OBJECT, "OAuth error: bad HTTP Basic client credentials"),
                    "413": _json(_ANY_OBJECT, "OAuth error: a body over 16 KiB"),
                    "429": _json(_ANY_OBJECT, "rate_limited: per address or client; Retry-After"),
                    "503": _json(
                        _ANY_OBJECT, "temporarily_unavailable: busy or catalog down; Retry-After"
                    ),
                },
            }
        },
        "/v1/events/{channel}": {
            "post": _operation(
                "Publish an event (object) or a batch (array); Idempotency-Key dedupes retries;"
                " 400 schema_violation lists every violation with its JSON path",
                (201, _ANY_OBJECT),
                (400, 401, 403, 413, 503),
                {"oneOf": [_ANY_OBJECT, {"type": "array", "items": _ANY_OBJECT}]},
                channel,
            ),
            "get": _operation(
                "History: retained events after ?after=N, at most ?limit=L",
                (200, _ANY_OBJECT),
                (400, 401, 403, 503),
                parameters=channel,
            ),
        },
        "/v1/channels/{channel}": {
            "get": _operation(
                "A channel's retention window",
                (200, _ANY_OBJECT),
                (401, 403, 503),
                parameters=channel,
            )
        },
        "/v1/stream/{channel}": {
            "get": {
                **_operation(
                    "Server-Sent Events from ?replayId=-1|-2|N or Last-Event-ID",
                    None,
                    (400, 401, 403, 404, 503),
                    parameters=channel,
                ),
                "responses": {
                    "200": {
                        "description": "an event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 403, 404, 503),
                },
            }
        },
    }


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "replaybus",
            "version": "1",
            "description": "Platform events with ReplayIds: publish over HTTPS, subscribe over "
            "SSE or Bayeux (/cometd, not described here), administer tenants and clients.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
        "security": [{"bearer": []}],
        "paths": _paths(),
    }


_DOCUMENT: dict[str, Any] = document()


async def openapi(request: Request) -> Response:
    return JSONBytesResponse(_DOCUMENT)
