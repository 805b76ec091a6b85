-- HTTP APIs: routes to functions. `spec` is the JSON of rampart_model::ApiSpec.
CREATE TABLE apis (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
