-- Tenants and API keys (issue 14). Every order, idempotency record, outbox event and inbox
-- record carries its tenant; rows written before tenants existed move to `default`, the
-- tenant of an instance running without authentication. Idempotency keys are stored scoped
-- as "<tenant>/<route>:<client key>", so existing keys are rewritten into the default tenant's
-- scope: a client retrying across the upgrade still gets its stored response.
ALTER TABLE orders ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE idempotency_keys ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE outbox_events ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE inbox_messages ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
UPDATE idempotency_keys SET key = 'default/' || key WHERE key NOT LIKE 'default/%';

-- Lists and the events feed are always filtered by tenant.
DROP INDEX orders_customer_id_idx;
DROP INDEX orders_status_id_idx;
CREATE INDEX orders_tenant_id_idx ON orders (tenant, id);
CREATE INDEX orders_tenant_customer_id_idx ON orders (tenant, customer_id, id);
CREATE INDEX orders_tenant_status_id_idx ON orders (tenant, status, id);
CREATE INDEX outbox_events_tenant_seq_idx ON outbox_events (tenant, seq);

-- API keys: the secret is shown once at creation and stored only as its SHA-256; `prefix`
-- (random, public, part of the key text) finds the row without scanning.
CREATE TABLE api_keys (
    id          UUID        NOT NULL PRIMARY KEY,
    prefix      TEXT        NOT NULL UNIQUE,
    secret_hash TEXT        NOT NULL,
    tenant      TEXT        NOT NULL,
    name        TEXT        NOT NULL,
    scopes      TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    created_by  TEXT        NOT NULL,
    expires_at  TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ
);
