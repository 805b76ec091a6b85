-- Published versions (PublishVersion names a deploy's version) and aliases with an optional
-- second, weighted version (RoutingConfig.AdditionalVersionWeights).
ALTER TABLE versions ADD COLUMN published INTEGER NOT NULL DEFAULT 0;
ALTER TABLE versions ADD COLUMN description TEXT NOT NULL DEFAULT '';
CREATE TABLE aliases (
    function           TEXT NOT NULL REFERENCES functions (name) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    version            INTEGER NOT NULL,
    additional_version INTEGER,
    additional_weight  REAL,
    description        TEXT NOT NULL DEFAULT '',
    revision_id        TEXT NOT NULL,
    PRIMARY KEY (function, name)
);
