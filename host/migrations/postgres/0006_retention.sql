-- Retention (issue 17): expired rows are found through an index, oldest first, and deleted in
-- batches of bounded size. The indexes are built inside the migration's transaction (writes
-- to these tables wait for it): on a large outbox, create them CONCURRENTLY by hand first
-- (RUNBOOK.md, Data retention) and this migration finds them.
CREATE INDEX IF NOT EXISTS outbox_events_published_at_idx ON outbox_events (published_at)
    WHERE published_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS inbox_messages_received_at_idx ON inbox_messages (received_at);

-- Per tenant, the highest outbox seq retention deleted: a reader of the events feed whose
-- cursor lies below it is told it may have missed events.
CREATE TABLE outbox_purge_marks (
    tenant          TEXT   NOT NULL PRIMARY KEY,
    purged_through  BIGINT NOT NULL
);
