-- The plugin author's dev loop (`weir serve --plugin FILE --watch`, actor `watch`) admits each
-- rebuild of the watched file, usually under an unchanged version, like start-up does with a
-- rebuilt binary. Uploads by operators stay one set of bytes per version.
DROP INDEX plugin_components_uploaded_version_idx;
CREATE UNIQUE INDEX plugin_components_uploaded_version_idx
    ON plugin_components (name, version) WHERE admitted_by NOT IN ('startup', 'watch');
