-- Retention (issue 17): expired rows are found through an index, oldest first, and deleted in
-- batches of bounded size.
CREATE INDEX outbox_events_published_at_idx ON outbox_events (published_at)
    WHERE published_at IS NOT NULL;
CREATE INDEX inbox_messages_received_at_idx ON inbox_messages (received_at);

-- Per tenant, the highest outbox seq retention deleted: a reader of the events feed whose
-- cursor lies below it is told it may have missed events. (AUTOINCREMENT never reuses a seq.)
CREATE TABLE outbox_purge_marks (
    tenant          TEXT    NOT NULL PRIMARY KEY,
    purged_through  INTEGER NOT NULL
) STRICT;
