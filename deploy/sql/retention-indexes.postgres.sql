-- Before migrating a large PostgreSQL database to migration 0006 (retention): build its two
-- indexes without blocking writes. The migration then finds them (IF NOT EXISTS) and only
-- creates its table. Run with psql outside a transaction (CONCURRENTLY refuses one).
-- RUNBOOK.md, "Data retention".
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_events_published_at_idx
    ON outbox_events (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS inbox_messages_received_at_idx
    ON inbox_messages (received_at);
