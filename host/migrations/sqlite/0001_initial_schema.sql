-- Weir storage schema, SQLite flavour (the embedded default).
--
-- Conventions:
-- * UUIDs are TEXT, lowercase hyphenated: order ids are UUIDv7, so text order is time order.
-- * Timestamps are TEXT in the fixed-width form YYYY-MM-DDTHH:MM:SS.ffffffZ (UTC, microseconds):
--   lexicographic comparison is chronological comparison.
-- * Money is INTEGER minor units; JSON is TEXT validated with json_valid().

CREATE TABLE products (
    sku         TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    unit_price  INTEGER NOT NULL,
    currency    TEXT    NOT NULL,
    stock       INTEGER NOT NULL,
    updated_at  TEXT    NOT NULL
) STRICT;

CREATE TABLE orders (
    id              TEXT    NOT NULL PRIMARY KEY,
    customer_id     TEXT    NOT NULL,
    currency        TEXT    NOT NULL,
    status          TEXT    NOT NULL
        CHECK (status IN ('placed', 'paid', 'shipped', 'cancelled')),
    subtotal        INTEGER NOT NULL,
    discount        INTEGER NOT NULL,
    tax             INTEGER NOT NULL,
    total           INTEGER NOT NULL,
    metadata        TEXT    NOT NULL DEFAULT '{}'
        CHECK (json_valid(metadata) AND json_type(metadata) = 'object'),
    plugin_name     TEXT    NOT NULL,
    plugin_version  TEXT    NOT NULL,
    plugin_digest   TEXT    NOT NULL,
    version         INTEGER NOT NULL DEFAULT 1,
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL
) STRICT;

CREATE INDEX orders_customer_id_idx ON orders (customer_id, id);
CREATE INDEX orders_status_id_idx ON orders (status, id);

CREATE TABLE order_lines (
    order_id    TEXT    NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no     INTEGER NOT NULL,
    sku         TEXT    NOT NULL,
    quantity    INTEGER NOT NULL CHECK (quantity >= 0),
    unit_price  INTEGER NOT NULL,
    line_total  INTEGER NOT NULL,
    PRIMARY KEY (order_id, line_no)
) STRICT;

CREATE TABLE idempotency_keys (
    key               TEXT    NOT NULL PRIMARY KEY,
    request_hash      TEXT    NOT NULL,
    state             TEXT    NOT NULL CHECK (state IN ('in_progress', 'completed')),
    response_status   INTEGER,
    response_body     BLOB,
    response_headers  TEXT CHECK (response_headers IS NULL OR json_valid(response_headers)),
    resource_id       TEXT,
    locked_until      TEXT    NOT NULL,
    created_at        TEXT    NOT NULL,
    completed_at      TEXT
) STRICT;

CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);

CREATE TABLE outbox_events (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT    NOT NULL UNIQUE,
    event_type        TEXT    NOT NULL,
    source            TEXT    NOT NULL,
    subject           TEXT    NOT NULL,
    occurred_at       TEXT    NOT NULL,
    data              TEXT    NOT NULL CHECK (json_valid(data)),
    traceparent       TEXT,
    tracestate        TEXT,
    published_at      TEXT,
    publish_attempts  INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX outbox_events_unpublished_idx ON outbox_events (seq) WHERE published_at IS NULL;

-- Dedupe is per consumer: two consumers may each process the same message once.
CREATE TABLE inbox_messages (
    consumer     TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    PRIMARY KEY (consumer, message_id)
) STRICT;
