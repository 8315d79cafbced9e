-- When each deleted tenant id was deleted, until a tenant of that id is created again: other
-- nodes may still serve the tenant from their caches for a while, so its id is not reused
-- before they have let go, and what they wrote meanwhile is swept first.
CREATE TABLE tenant_tombstones (
    tenant_id   text PRIMARY KEY,
    deleted_us  bigint NOT NULL
);
