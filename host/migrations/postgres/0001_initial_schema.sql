-- Weir storage schema, PostgreSQL flavour (the production path).
--
-- Money is BIGINT minor units; timestamps are timestamptz; JSON is jsonb.

CREATE TABLE products (
    sku         TEXT        NOT NULL PRIMARY KEY,
    name        TEXT        NOT NULL,
    unit_price  BIGINT      NOT NULL,
    currency    TEXT        NOT NULL,
    stock       BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE orders (
    id              UUID        NOT NULL PRIMARY KEY,
    customer_id     TEXT        NOT NULL,
    currency        TEXT        NOT NULL,
    status          TEXT        NOT NULL
        CHECK (status IN ('placed', 'paid', 'shipped', 'cancelled')),
    subtotal        BIGINT      NOT NULL,
    discount        BIGINT      NOT NULL,
    tax             BIGINT      NOT NULL,
    total           BIGINT      NOT NULL,
    metadata        JSONB       NOT NULL DEFAULT '{}'::jsonb
        CHECK (jsonb_typeof(metadata) = 'object'),
    plugin_name     TEXT        NOT NULL,
    plugin_version  TEXT        NOT NULL,
    plugin_digest   TEXT        NOT NULL,
    version         BIGINT      NOT NULL DEFAULT 1,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE INDEX orders_customer_id_idx ON orders (customer_id, id);
CREATE INDEX orders_status_id_idx ON orders (status, id);

CREATE TABLE order_lines (
    order_id    UUID   NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no     INTEGER NOT NULL,
    sku         TEXT   NOT NULL,
    quantity    BIGINT NOT NULL CHECK (quantity >= 0),
    unit_price  BIGINT NOT NULL,
    line_total  BIGINT NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE idempotency_keys (
    key               TEXT        NOT NULL PRIMARY KEY,
    request_hash      TEXT        NOT NULL,
    state             TEXT        NOT NULL CHECK (state IN ('in_progress', 'completed')),
    response_status   INTEGER,
    response_body     BYTEA,
    response_headers  JSONB,
    resource_id       TEXT,
    locked_until      TIMESTAMPTZ NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    completed_at      TIMESTAMPTZ
);

CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);

CREATE TABLE outbox_events (
    seq               BIGSERIAL   PRIMARY KEY,
    id                UUID        NOT NULL UNIQUE,
    event_type        TEXT        NOT NULL,
    source            TEXT        NOT NULL,
    subject           TEXT        NOT NULL,
    occurred_at       TIMESTAMPTZ NOT NULL,
    data              JSONB       NOT NULL,
    traceparent       TEXT,
    tracestate        TEXT,
    published_at      TIMESTAMPTZ,
    publish_attempts  INTEGER     NOT NULL DEFAULT 0
);

CREATE INDEX outbox_events_unpublished_idx ON outbox_events (seq) WHERE published_at IS NULL;

-- Dedupe is per consumer: two consumers may each process the same message once.
CREATE TABLE inbox_messages (
    consumer     TEXT        NOT NULL,
    message_id   TEXT        NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
