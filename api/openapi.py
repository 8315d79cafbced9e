"""`GET /openapi.json`: the OpenAPI 3.1 description of the native `/v1` API.

Every operation names the domain errors its route can raise; each one's status and `error` code
come from the one HTTP error table (`api.errors.HTTP_ERRORS`), so an operation documents every
status it can answer, and under each status exactly the `error` codes it can carry. A new
refusal in a route is one more class in its `raises` below.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.errors import HTTP_ERRORS
from api.responses import JSONBytesResponse
from app import errors
from app.publishing import MAX_IDEMPOTENCY_KEY_LENGTH
from app.recovery import MAX_REPLAY_ID
from app.tenancy import describe_settings

__all__ = ["UNDOCUMENTED_ERRORS", "document", "openapi", "route_errors"]

ErrorClass = type[errors.ReplaybusError]

#: A token checked: none sent, one that does not verify or has expired, its client revoked or
#: its tenant deleted, its tenant suspended, a browser origin the tenant does not allow, or a
#: client this node has never seen while the catalog database is unreachable.
_TOKEN: tuple[ErrorClass, ...] = (
    errors.TokenMissing,
    errors.TokenInvalid,
    errors.TokenExpired,
    errors.TenantSuspended,
    errors.PermissionDenied,
    errors.CatalogUnavailable,
)
_SCOPE: tuple[ErrorClass, ...] = (errors.InsufficientScope,)
_BODY: tuple[ErrorClass, ...] = (
    errors.MalformedJson,
    errors.RequestTooLarge,
    errors.InvalidBody,
    errors.RequestTimeout,
)
_ENGINE: tuple[ErrorClass, ...] = (errors.EngineUnavailable,)
_CHANNEL: tuple[ErrorClass, ...] = (errors.InvalidChannel, errors.UnknownChannel)
#: The operator key or an `admin`-scoped token; another tenant's resources look absent.
_ADMIN: tuple[ErrorClass, ...] = (*_TOKEN, *_SCOPE, errors.NotFound)
#: Changes are refused (409) by a node whose embedded catalog lives in several workers.
_ADMIN_WRITE: tuple[ErrorClass, ...] = (*_ADMIN, errors.Conflict)
_DEFINITION: tuple[ErrorClass, ...] = (errors.InvalidChannel, errors.ChannelNotPublishable)

#: A path parameter no route matches (a line break in a channel, a slash in a tenant id) is
#: answered by the router itself: 404 `not_found`, the code of a missing resource.
_UNROUTED: tuple[ErrorClass, ...] = (errors.NotFound,)

#: Error classes no `/v1` operation answers with: abstract bases never raised themselves, the
#: status of a client that went away (nobody reads it), and the Bayeux transport's own.
UNDOCUMENTED_ERRORS: frozenset[ErrorClass] = frozenset(
    {
        errors.ReplaybusError,
        errors.BadRequest,
        errors.TooLarge,
        errors.AuthenticationFailed,
        errors.QuotaExceeded,
        errors.ServiceUnavailable,
        errors.ClientGone,
        errors.MalformedBayeux,
    }
)

#: What an OAuth error status means on the token endpoint (RFC 6749 §5.2 bodies).
_OAUTH_ERRORS = {
    400: "invalid_request, invalid_client, invalid_grant, unsupported_grant_type, "
    "unauthorized_client, invalid_scope, or insecure_transport (plain HTTP from afar)",
    401: "invalid_client: bad credentials sent with HTTP Basic",
    408: "invalid_request: the form did not arrive within REPLAYBUS_BODY_TIMEOUT (the "
    "connection is closed)",
    413: "invalid_request: the form is too large",
    429: "too many token requests: retry after Retry-After seconds",
    503: "temporarily_unavailable: credentials cannot be checked right now (Retry-After)",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}


def _error_responses(raises: Iterable[ErrorClass]) -> dict[str, Any]:
    """One response per status the classes map to, its `error` limited to their codes."""
    codes: dict[int, list[str]] = {}
    for cls in raises:
        status, code = HTTP_ERRORS[cls]
        if code not in codes.setdefault(status, []):
            codes[status].append(code)
    responses: dict[str, Any] = {}
    for status, listed in sorted(codes.items()):
        schema = {"allOf": [_ref("Error"), {"properties": {"error": {"enum": listed}}}]}
        response = _json(schema, ", ".join(listed))
        if status in (429, 503):
            response["headers"] = _RETRY_AFTER
        responses[str(status)] = response
    return responses


_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
_CHANNEL_TEXT = "a channel name without its leading slash: event/Order_Placed__e"
_PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "tenant": {"name": "tenant", "in": "path", "required": True, "schema": _NAME},
    "client": {"name": "client", "in": "path", "required": True, "schema": _NAME},
    "channel": {
        "name": "channel",
        "in": "path",
        "required": True,
        "description": _CHANNEL_TEXT,
        "schema": {"type": "string", "minLength": 1, "maxLength": 254},
    },
}
_POSITION = {"type": "integer", "minimum": -2, "maximum": MAX_REPLAY_ID}


def _parameters(path: tuple[str, ...], query: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [_PATH_PARAMETERS[name] for name in path] + list(query)


def _optional(where: str, name: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    """An optional query or header parameter."""
    return {"name": name, "in": where, "required": False, "schema": schema, "description": text}


def _operation(
    summary: str,
    ok: tuple[int, dict[str, Any]],
    raises: tuple[ErrorClass, ...],
    body: dict[str, Any] | None = None,
    path: tuple[str, ...] = (),
    query: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    status, schema = ok
    if path:
        raises = (*raises, *_UNROUTED)
    responses = {str(status): _json(schema, "success"), **_error_responses(raises)}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    parameters = _parameters(path, query)
    if parameters:
        operation["parameters"] = parameters
    return operation


def route_errors(document: dict[str, Any]) -> dict[tuple[str, str], dict[int, set[str]]]:
    """(method, path) of each operation of `document`, to its error statuses and, for each,
    the `error` codes it may carry (empty where the codes are not enumerated)."""
    found: dict[tuple[str, str], dict[int, set[str]]] = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            statuses: dict[int, set[str]] = {}
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                schema = response["content"]["application/json"]["schema"]
                parts = schema.get("allOf", [schema])
                enum = parts[-1].get("properties", {}).get("error", {}).get("enum", [])
                statuses[int(status)] = set(enum)
            found[(method.upper(), path)] = statuses
    return found


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
        "OAuthError": {
            "type": "object",
            "required": ["error", "error_description"],
            "properties": {
                "error": {"type": "string"},
                "error_description": {"type": "string"},
            },
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
        "Published": {
            "type": "object",
            "required": ["channel", "replayId", "uuid", "createdDate", "duplicate"],
            "properties": {
                "channel": {"type": "string"},
                "replayId": {"type": "integer"},
                "uuid": {"type": "string"},
                "createdDate": {"type": "string"},
                "duplicate": {"type": "boolean"},
            },
        },
        "Envelope": {
            "type": "object",
            "required": ["channel", "replayId", "uuid", "createdDate", "schema", "payload"],
            "properties": {
                "channel": {"type": "string"},
                "replayId": {"type": "integer"},
                "uuid": {"type": "string"},
                "createdDate": {"type": "string"},
                "schema": {"type": ["string", "null"]},
                "payload": {"type": "object"},
            },
        },
        "History": {
            "type": "object",
            "required": ["channel", "events", "next", "window"],
            "properties": {
                "channel": {"type": "string"},
                "events": {"type": "array", "items": _ref("Envelope")},
                "next": {"type": "integer"},
                "window": {"type": "object"},
                "gap": {"type": "object"},
            },
        },
        "ChannelWindow": {
            "type": "object",
            "required": ["channel", "earliest", "latest", "lowWaterMark", "count", "retention"],
            "properties": {
                "channel": {"type": "string"},
                "earliest": {"type": ["integer", "null"]},
                "latest": {"type": "integer"},
                "lowWaterMark": {"type": "integer"},
                "count": {"type": "integer"},
                "retention": {
                    "type": "object",
                    "properties": {
                        "maxAgeSeconds": {"type": "number"},
                        "maxCount": {"type": "integer"},
                    },
                },
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


def _token_operation() -> dict[str, Any]:
    """The OAuth token endpoint answers in RFC 6749's shapes, not the native error table's."""
    form = {
        "type": "object",
        "properties": {
            name: {"type": "string"}
            for name in (
                "grant_type",
                "client_id",
                "client_secret",
                "scope",
                "username",
                "password",
                "refresh_token",
                "assertion",
            )
        },
    }
    responses: dict[str, Any] = {"200": _json(_ANY_OBJECT, "an access token")}
    for status, text in _OAUTH_ERRORS.items():
        responses[str(status)] = _json(_ref("OAuthError"), text)
        if status in (429, 503):
            responses[str(status)]["headers"] = _RETRY_AFTER
    return {
        "summary": "OAuth 2.0 token endpoint (all grants)",
        "security": [],
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": form}},
        },
        "responses": responses,
    }


def _paths() -> dict[str, Any]:
    tenant = "/v1/admin/tenants/{tenant}"
    client = tenant + "/clients/{client}"
    definition = tenant + "/channels/{channel}"
    tenants_list = {
        "type": "object",
        "properties": {"tenants": {"type": "array", "items": _ref("Tenant")}},
    }
    clients_list = {
        "type": "object",
        "properties": {"clients": {"type": "array", "items": _ref("Client")}},
    }
    channels_list = {
        "type": "object",
        "properties": {"channels": {"type": "array", "items": _ref("ChannelDefinition")}},
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
    define = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "description": {"type": "string"},
            "owner": {"type": "string"},
            "retention": {"type": ["object", "null"]},
            "schema": {"description": "JSON Schema (draft 2020-12), or null to remove it"},
            "force": {"type": "boolean", "description": "accept a backward-incompatible schema"},
        },
    }
    publish = {"oneOf": [_ANY_OBJECT, {"type": "array", "items": _ANY_OBJECT}]}
    idempotency_key = _optional(
        "header",
        "Idempotency-Key",
        {"type": "string", "pattern": f"^[\\x21-\\x7e]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}$"},
        "a retry with the same key within the idempotency TTL stores nothing new",
    )
    after = _optional(
        "query", "after", _POSITION, "-2 (default: from the oldest retained) or a ReplayId"
    )
    limit = _optional("query", "limit", {"type": "integer", "minimum": 1}, "events per page")
    replay_id = _optional(
        "query", "replayId", _POSITION, "-1 (default: new events), -2 or a ReplayId"
    )
    last_event_id = _optional("header", "Last-Event-ID", {"type": "string"}, "wins over replayId")
    access_token = _optional(
        "query",
        "access_token",
        {"type": "string"},
        "the token, for clients that cannot set headers",
    )
    tenant_path, client_path = ("tenant",), ("tenant", "client")
    channel_path, definition_path = ("channel",), ("tenant", "channel")
    stream = _operation(
        "Server-Sent Events from ?replayId=-1|-2|N or Last-Event-ID",
        (200, {"type": "string"}),
        (
            *_TOKEN,
            *_SCOPE,
            *_CHANNEL,
            errors.InvalidReplayId,
            errors.Draining,
            errors.Overloaded,
            errors.TooManySubscribers,
            *_ENGINE,
        ),
        path=channel_path,
        query=(replay_id, access_token, last_event_id),
    )
    gap = {
        "type": "object",
        "required": ["requested", "earliest", "latest"],
        "description": "`event: gap`: events between these positions are no longer retained",
    }
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "event": {"enum": ["message", "gap"]},
            "id": {"type": "string"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"anyOf": [_ref("Envelope"), gap]},
            },
        },
    }
    stream["responses"]["200"] = {
        "description": "an event stream: each event's data is an envelope (or, for "
        "`event: gap`, the positions no longer retained)",
        "content": {"text/event-stream": {"schema": event}},
    }
    return {
        tenant + "/channels": {
            "get": _operation(
                "List a tenant's channel definitions",
                (200, channels_list),
                _ADMIN,
                path=tenant_path,
            )
        },
        definition: {
            "put": _operation(
                "Create or update a channel definition; a new schema must be backward "
                "compatible unless forced (409 incompatible_schema lists the problems)",
                (200, _ref("ChannelDefinition")),
                (*_ADMIN_WRITE, *_BODY, *_DEFINITION, errors.IncompatibleSchema),
                define,
                definition_path,
            ),
            "get": _operation(
                "Show a channel definition with its schema versions",
                (200, _ref("ChannelDefinition")),
                (*_ADMIN, *_DEFINITION),
                path=definition_path,
            ),
            "delete": _operation(
                "Delete a channel definition and its schema history (events stay)",
                (200, _ANY_OBJECT),
                (*_ADMIN_WRITE, *_DEFINITION),
                path=definition_path,
            ),
        },
        "/v1/channels/{channel}/schema": {
            "get": _operation(
                "The channel's current payload schema (a channel literally named like "
                "/event/schema, of two segments, is served its window instead)",
                (200, {"anyOf": [_ref("SchemaVersion"), _ref("ChannelWindow")]}),
                (*_TOKEN, *_SCOPE, *_CHANNEL, errors.NotFound, *_ENGINE),
                path=channel_path,
            )
        },
        "/v1/admin/tenants": {
            "get": _operation(
                "List tenants (a tenant admin sees its own)", (200, tenants_list), _ADMIN
            ),
            "post": _operation(
                "Create a tenant (operator); an id deleted moments ago rests first (409 "
                "tenant_recently_deleted with Retry-After), then what was left of it is dropped "
                "(503 if that takes longer than one request: send it again to go on)",
                (201, _ref("Tenant")),
                (*_ADMIN_WRITE, *_BODY, errors.TenantRecentlyDeleted, *_ENGINE),
                new_tenant,
            ),
        },
        tenant: {
            "get": _operation("Show a tenant", (200, _ref("Tenant")), _ADMIN, path=tenant_path),
            "patch": _operation(
                "Change a tenant's settings (operator)",
                (200, _ref("Tenant")),
                (*_ADMIN_WRITE, *_BODY),
                {"type": "object", "properties": {"settings": _ref("TenantSettings")}},
                tenant_path,
            ),
            "delete": _operation(
                "Delete a tenant, its clients and its retained events (operator); 503 if "
                "dropping the events takes longer than one request (the tenant is deleted all "
                "the same): deleting it again goes on dropping them",
                (200, deleted),
                (*_ADMIN_WRITE, *_ENGINE),
                path=tenant_path,
            ),
        },
        tenant + "/suspend": {
            "post": _operation(
                "Suspend a tenant (operator)", (200, _ref("Tenant")), _ADMIN_WRITE, path=tenant_path
            )
        },
        tenant + "/resume": {
            "post": _operation(
                "Resume a tenant (operator)", (200, _ref("Tenant")), _ADMIN_WRITE, path=tenant_path
            )
        },
        tenant + "/clients": {
            "get": _operation(
                "List a tenant's clients", (200, clients_list), _ADMIN, path=tenant_path
            ),
            "post": _operation(
                "Create a client; its secret is shown once",
                (201, _ref("IssuedClient")),
                (*_ADMIN_WRITE, *_BODY),
                new_client,
                tenant_path,
            ),
        },
        client: {
            "get": _operation("Show a client", (200, _ref("Client")), _ADMIN, path=client_path)
        },
        client + "/rotate": {
            "post": _operation(
                "Give a client a new secret (shown once)",
                (200, _ref("IssuedClient")),
                _ADMIN_WRITE,
                path=client_path,
            )
        },
        client + "/revoke": {
            "post": _operation(
                "Revoke a client: new tokens at once, issued ones within the catalog cache TTL",
                (200, _ref("Client")),
                _ADMIN_WRITE,
                path=client_path,
            )
        },
        "/v1/oauth/token": {"post": _token_operation()},
        "/v1/events/{channel}": {
            "post": _operation(
                "Publish an event (object) or a batch (array); Idempotency-Key dedupes retries;"
                " 400 schema_violation lists every violation with its JSON path",
                (
                    201,
                    {"oneOf": [_ref("Published"), {"type": "array", "items": _ref("Published")}]},
                ),
                (
                    *_TOKEN,
                    *_SCOPE,
                    *_BODY,
                    *_CHANNEL,
                    errors.ChannelNotPublishable,
                    errors.InvalidParameter,
                    errors.EventTooLarge,
                    errors.BatchTooLarge,
                    errors.SchemaViolation,
                    errors.ValidationTooCostly,
                    errors.UnusableSchema,
                    errors.RateLimited,
                    errors.TooManyChannels,
                    *_ENGINE,
                    errors.NotReplicated,
                ),
                publish,
                channel_path,
                (idempotency_key,),
            ),
            "get": _operation(
                "History: retained events after ?after=N, at most ?limit=L",
                (200, _ref("History")),
                (
                    *_TOKEN,
                    *_SCOPE,
                    *_CHANNEL,
                    errors.InvalidReplayId,
                    errors.InvalidParameter,
                    *_ENGINE,
                ),
                path=channel_path,
                query=(after, limit),
            ),
        },
        "/v1/channels/{channel}": {
            "get": _operation(
                "A channel's retention window",
                (200, _ref("ChannelWindow")),
                (*_TOKEN, *_SCOPE, *_CHANNEL, *_ENGINE),
                path=channel_path,
            )
        },
        "/v1/stream/{channel}": {"get": stream},
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
