-- Schema version 1 (PostgreSQL dialect): the SQLite schema's versions 1 and 2 in one.
-- Times are BIGINT unix milliseconds (UTC), as in SQLite; "revoked" is
-- "revoked_at_ms IS NOT NULL". The `seq` columns keep insertion order for ties in
-- time (SQLite's rowid).

CREATE TABLE links (
    id             TEXT     NOT NULL PRIMARY KEY,
    vm             TEXT     NOT NULL,
    console        TEXT     NOT NULL,
    expires_at_ms  BIGINT   NOT NULL,
    not_before_ms  BIGINT,
    password_hash  TEXT,
    max_uses       BIGINT,
    max_viewers    BIGINT,
    view_only      BOOLEAN  NOT NULL DEFAULT FALSE,
    allow_power    BOOLEAN  NOT NULL DEFAULT FALSE,
    note           TEXT,
    uses           BIGINT   NOT NULL DEFAULT 0,
    created_at_ms  BIGINT   NOT NULL,
    revoked_at_ms  BIGINT,
    seq            BIGINT   GENERATED ALWAYS AS IDENTITY,
    CHECK (uses >= 0),
    CHECK (max_uses IS NULL OR max_uses >= 1),
    CHECK (max_viewers IS NULL OR max_viewers >= 1)
);
CREATE INDEX links_created ON links (created_at_ms, seq);

CREATE TABLE admin_tokens (
    id             TEXT     NOT NULL PRIMARY KEY,
    name           TEXT     NOT NULL,
    token_sha256   TEXT     NOT NULL UNIQUE,
    created_at_ms  BIGINT   NOT NULL,
    revoked_at_ms  BIGINT,
    seq            BIGINT   GENERATED ALWAYS AS IDENTITY
);
-- A name is unique among live tokens; a revoked token's name may be reused.
CREATE UNIQUE INDEX admin_tokens_live_name ON admin_tokens (name) WHERE revoked_at_ms IS NULL;

CREATE TABLE signing_keys (
    kid            TEXT     NOT NULL PRIMARY KEY,
    secret         BYTEA    NOT NULL,
    created_at_ms  BIGINT   NOT NULL,
    retired        BOOLEAN  NOT NULL DEFAULT FALSE,
    seq            BIGINT   GENERATED ALWAYS AS IDENTITY
);

CREATE TABLE targets (
    name           TEXT     NOT NULL PRIMARY KEY,
    kind           TEXT     NOT NULL,
    address_kind   TEXT     NOT NULL,
    address        TEXT     NOT NULL,
    vnc_password   TEXT,
    created_at_ms  BIGINT   NOT NULL,
    CHECK (address_kind IN ('tcp', 'unix'))
);

CREATE TABLE audit (
    id             BIGINT   GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms          BIGINT   NOT NULL,
    kind           TEXT     NOT NULL,
    link_id        TEXT,
    session_id     TEXT,
    client         TEXT,
    detail         TEXT
);
CREATE INDEX audit_link ON audit (link_id, id);
CREATE INDEX audit_at ON audit (at_ms);

-- Visitors' grants, stored as the SHA-256 of each session cookie (SQLite's version 2).
CREATE TABLE grants (
    cookie_sha256  TEXT     NOT NULL PRIMARY KEY,
    link_id        TEXT     NOT NULL,
    expires_at_ms  BIGINT   NOT NULL,
    created_at_ms  BIGINT   NOT NULL
);
CREATE INDEX grants_link ON grants (link_id);
CREATE INDEX grants_expiry ON grants (expires_at_ms);
