-- Schema version 2: visitors' grants, stored as the SHA-256 of each session cookie, so
-- that a gateway restart neither logs visitors out nor makes them spend another use.

CREATE TABLE grants (
    cookie_sha256  TEXT    NOT NULL PRIMARY KEY,
    link_id        TEXT    NOT NULL,
    expires_at_ms  BIGINT  NOT NULL,
    created_at_ms  BIGINT  NOT NULL
);
CREATE INDEX grants_link ON grants (link_id);
CREATE INDEX grants_expiry ON grants (expires_at_ms);
