-- Tenant status and per-tenant settings (retention, quotas, CORS origins, channel rules).
-- Settings are one JSON object whose absent keys mean "the server-wide default".
ALTER TABLE tenants
    ADD COLUMN suspended  boolean NOT NULL DEFAULT false,
    ADD COLUMN settings   jsonb NOT NULL DEFAULT '{}'::jsonb;

-- Set anew when a client is created and carried in its tokens, so a token of a deleted client
-- never works for a later client reusing the id.
ALTER TABLE oauth_clients
    ADD COLUMN generation text NOT NULL DEFAULT '';
