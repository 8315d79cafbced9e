-- Tenants, OAuth clients and users: the control plane's first tables.
CREATE TABLE tenants (
    tenant_id   text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE oauth_clients (
    client_id       text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    secret_hash     text NOT NULL,
    scopes          text[] NOT NULL,
    revoked         boolean NOT NULL DEFAULT false,
    jwt_public_key  text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_clients_by_tenant ON oauth_clients (tenant_id);

CREATE TABLE users (
    username       text PRIMARY KEY,
    tenant_id      text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    password_hash  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
