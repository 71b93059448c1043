-- Plugin lifecycle (issue 11): admitted components by digest (bytes included, so every replica
-- can load any version), the release of each plugin (compare-and-set on `generation`), and the
-- audit trail of every release change. Releases and audit entries are JSONB documents of the
-- core's `Release` / `ReleaseAudit`. A release change notifies `weir_plugin_release` with the
-- plugin name, so replicas converge without waiting for their next poll.
CREATE TABLE plugin_components (
    digest       TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    size         BIGINT NOT NULL,
    capabilities JSONB NOT NULL,
    bytes        BYTEA NOT NULL,
    admitted_at  TIMESTAMPTZ NOT NULL,
    admitted_by  TEXT NOT NULL
);

-- A plugin version uploaded by an operator is one set of bytes for ever. Components loaded at
-- start-up (the built-in plugin, `plugins.dir`) are exempt: a rebuilt binary may carry new
-- bytes under an unchanged version.
CREATE UNIQUE INDEX plugin_components_uploaded_version_idx
    ON plugin_components (name, version) WHERE admitted_by <> 'startup';

CREATE TABLE plugin_releases (
    name       TEXT PRIMARY KEY,
    generation BIGINT NOT NULL CHECK (generation > 0),
    release    JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE plugin_release_history (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL,
    generation BIGINT NOT NULL,
    at         TIMESTAMPTZ NOT NULL,
    audit      JSONB NOT NULL,
    UNIQUE (name, generation)
);
