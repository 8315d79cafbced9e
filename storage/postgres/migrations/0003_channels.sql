-- Channel definitions and their schema history.
CREATE TABLE channel_definitions (
    tenant_id       text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    name            text NOT NULL,
    description     text NOT NULL DEFAULT '',
    owner           text NOT NULL DEFAULT '',
    retention       jsonb NOT NULL DEFAULT '{}'::jsonb,
    current_schema_id  text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE schema_versions (
    schema_id   text PRIMARY KEY,
    tenant_id   text NOT NULL,
    name        text NOT NULL,
    version     integer NOT NULL,
    document    text NOT NULL,
    created_us  bigint NOT NULL,
    UNIQUE (tenant_id, name, version),
    FOREIGN KEY (tenant_id, name) REFERENCES channel_definitions (tenant_id, name)
        ON DELETE CASCADE
);
