-- Outbox relay leases (issue 6): a relay claims unpublished rows for a bounded time, so several
-- replicas never publish the same row concurrently and a crashed relay's rows become
-- claimable again once its lease expires.
ALTER TABLE outbox_events
    ADD COLUMN claimed_by    TEXT,
    ADD COLUMN claimed_until TIMESTAMPTZ;

-- Per-order ordering check of the claim query: the earliest unpublished row of a subject.
CREATE INDEX outbox_events_unpublished_subject_idx
    ON outbox_events (subject, seq) WHERE published_at IS NULL;
