"""`/v1/admin/...`: tenants and their OAuth clients over JSON (described in /openapi.json)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import authenticate_admin
from api.body import read_json
from api.responses import JSONBytesResponse
from api.services import Services
from app.admin import Admin, IssuedClient
from app.catalog import ChannelDefinition, ClientRecord, SchemaVersion, Tenant
from app.errors import CatalogUnavailable, InvalidBody
from app.tenancy import settings_to_json

__all__ = ["channel_json", "client_json", "routes", "schema_json", "tenant_json"]

_MAX_BODY = 64 * 1024
Handler = Callable[[Request, Services, Admin], Awaitable[Response]]


def tenant_json(tenant: Tenant) -> dict[str, Any]:
    return {
        "tenantId": tenant.tenant_id,
        "suspended": tenant.suspended,
        "settings": settings_to_json(tenant.settings),
    }


def client_json(record: ClientRecord) -> dict[str, Any]:
    return {
        "clientId": record.client_id,
        "tenantId": record.tenant,
        "scopes": list(record.scopes),
        "revoked": record.revoked,
        "jwtBearer": record.jwt_public_key is not None,
    }


def schema_json(version: SchemaVersion) -> dict[str, Any]:
    return {
        "schemaId": version.schema_id,
        "channel": version.channel,
        "version": version.version,
        "schema": orjson.Fragment(version.document),
    }


def channel_json(definition: ChannelDefinition) -> dict[str, Any]:
    return {
        "channel": definition.name,
        "description": definition.description,
        "owner": definition.owner,
        "retention": {
            "maxAge": definition.retention_max_age,
            "maxCount": definition.retention_max_count,
        },
        "schema": schema_json(definition.schema) if definition.schema else None,
    }


def _issued_json(issued: IssuedClient) -> dict[str, Any]:
    return {**client_json(issued.record), "clientSecret": issued.secret}


async def _object(request: Request) -> dict[str, Any]:
    # A channel definition carries a schema of up to REPLAYBUS_MAX_SCHEMA_SIZE, perhaps
    # indented: room for it on top of the rest.
    limit = _MAX_BODY + 2 * request.app.state.services.settings.max_schema_size
    body = await read_json(request, limit)
    if not isinstance(body, dict):
        raise InvalidBody("the request body must be a JSON object")
    return body


def _admin_route(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        services: Services = request.app.state.services
        admin = await authenticate_admin(request, services)
        try:
            return await handler(request, services, admin)
        except CatalogUnavailable:
            raise CatalogUnavailable(
                "administration needs the catalog database, which is unreachable right now; "
                "publishing and subscribing carry on"
            ) from None

    return endpoint


def _tenant_id(request: Request) -> str:
    return str(request.path_params["tenant"])


async def list_tenants(request: Request, services: Services, admin: Admin) -> Response:
    tenants = await services.admin.list_tenants(admin)
    return JSONBytesResponse({"tenants": [tenant_json(tenant) for tenant in tenants]})


async def create_tenant(request: Request, services: Services, admin: Admin) -> Response:
    body = await _object(request)
    tenant = await services.admin.create_tenant(admin, body.get("tenantId"), body.get("settings"))
    return JSONBytesResponse(tenant_json(tenant), 201)


async def show_tenant(request: Request, services: Services, admin: Admin) -> Response:
    tenant = await services.admin.get_tenant(admin, _tenant_id(request))
    return JSONBytesResponse(tenant_json(tenant))


async def update_tenant(request: Request, services: Services, admin: Admin) -> Response:
    body = await _object(request)
    if set(body) - {"settings"}:
        raise InvalidBody('send {"settings": {...}}; suspend and resume have their own routes')
    tenant = await services.admin.update_tenant(admin, _tenant_id(request), body.get("settings"))
    return JSONBytesResponse(tenant_json(tenant))


async def suspend_tenant(request: Request, services: Services, admin: Admin) -> Response:
    tenant = await services.admin.set_suspended(admin, _tenant_id(request), True)
    return JSONBytesResponse(tenant_json(tenant))


async def resume_tenant(request: Request, services: Services, admin: Admin) -> Response:
    tenant = await services.admin.set_suspended(admin, _tenant_id(request), False)
    return JSONBytesResponse(tenant_json(tenant))


async def delete_tenant(request: Request, services: Services, admin: Admin) -> Response:
    tenant_id = _tenant_id(request)
    dropped = await services.admin.delete_tenant(admin, tenant_id)
    return JSONBytesResponse({"tenantId": tenant_id, "deleted": True, "droppedChannels": dropped})


async def list_clients(request: Request, services: Services, admin: Admin) -> Response:
    records = await services.admin.list_clients(admin, _tenant_id(request))
    return JSONBytesResponse({"clients": [client_json(record) for record in records]})


async def create_client(request: Request, services: Services, admin: Admin) -> Response:
    body = await _object(request)
    issued = await services.admin.create_client(
        admin,
        _tenant_id(request),
        body.get("scopes"),
        client_id=body.get("clientId"),
        jwt_public_key=body.get("jwtPublicKey"),
    )
    return JSONBytesResponse(_issued_json(issued), 201)


def _client_id(request: Request) -> str:
    return str(request.path_params["client"])


async def show_client(request: Request, services: Services, admin: Admin) -> Response:
    record = await services.admin.get_client(admin, _tenant_id(request), _client_id(request))
    return JSONBytesResponse(client_json(record))


async def rotate_client(request: Request, services: Services, admin: Admin) -> Response:
    issued = await services.admin.rotate_secret(admin, _tenant_id(request), _client_id(request))
    return JSONBytesResponse(_issued_json(issued))


async def revoke_client(request: Request, services: Services, admin: Admin) -> Response:
    record = await services.admin.revoke_client(admin, _tenant_id(request), _client_id(request))
    return JSONBytesResponse(client_json(record))


def _channel(request: Request) -> str:
    return "/" + str(request.path_params["channel"])


async def list_channels(request: Request, services: Services, admin: Admin) -> Response:
    definitions = await services.admin.list_channels(admin, _tenant_id(request))
    return JSONBytesResponse({"channels": [channel_json(d) for d in definitions]})


async def define_channel(request: Request, services: Services, admin: Admin) -> Response:
    body = await _object(request)
    change = await services.admin.define_channel(
        admin, _tenant_id(request), _channel(request), body
    )
    content = {
        **channel_json(change.definition),
        "newVersion": change.new_version is not None,
        "forcedProblems": list(change.forced),
    }
    return JSONBytesResponse(content)


async def show_channel(request: Request, services: Services, admin: Admin) -> Response:
    definition, versions = await services.admin.get_channel(
        admin, _tenant_id(request), _channel(request)
    )
    history = [
        {"schemaId": v.schema_id, "version": v.version, "createdUs": v.created_us} for v in versions
    ]
    return JSONBytesResponse({**channel_json(definition), "versions": history})


async def delete_channel(request: Request, services: Services, admin: Admin) -> Response:
    await services.admin.delete_channel(admin, _tenant_id(request), _channel(request))
    return JSONBytesResponse({"channel": _channel(request), "deleted": True})


_TENANT = "/v1/admin/tenants/{tenant}"
_CLIENT = _TENANT + "/clients/{client}"
_CHANNEL = _TENANT + "/channels/{channel:path}"
routes = [
    Route("/v1/admin/tenants", _admin_route(list_tenants), methods=["GET"]),
    Route("/v1/admin/tenants", _admin_route(create_tenant), methods=["POST"]),
    Route(_TENANT, _admin_route(show_tenant), methods=["GET"]),
    Route(_TENANT, _admin_route(update_tenant), methods=["PATCH"]),
    Route(_TENANT, _admin_route(delete_tenant), methods=["DELETE"]),
    Route(_TENANT + "/suspend", _admin_route(suspend_tenant), methods=["POST"]),
    Route(_TENANT + "/resume", _admin_route(resume_tenant), methods=["POST"]),
    Route(_TENANT + "/clients", _admin_route(list_clients), methods=["GET"]),
    Route(_TENANT + "/clients", _admin_route(create_client), methods=["POST"]),
    Route(_CLIENT, _admin_route(show_client), methods=["GET"]),
    Route(_CLIENT + "/rotate", _admin_route(rotate_client), methods=["POST"]),
    Route(_CLIENT + "/revoke", _admin_route(revoke_client), methods=["POST"]),
    Route(_TENANT + "/channels", _admin_route(list_channels), methods=["GET"]),
    Route(_CHANNEL, _admin_route(define_channel), methods=["PUT"]),
    Route(_CHANNEL, _admin_route(show_channel), methods=["GET"]),
    Route(_CHANNEL, _admin_route(delete_channel), methods=["DELETE"]),
]
