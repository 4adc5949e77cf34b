-- Schema version 4 (PostgreSQL): session recordings. Links may say whether their sessions are
-- recorded (NULL: the gateway's `recording.default`); the index of recording files, each
-- kept in the recordings folder of the gateway that wrote it (`gateway`).

ALTER TABLE links ADD COLUMN record BOOLEAN;

CREATE TABLE recordings (
    id             TEXT    NOT NULL PRIMARY KEY,
    session_id     TEXT    NOT NULL,
    link_id        TEXT    NOT NULL,
    vm             TEXT    NOT NULL,
    console        TEXT    NOT NULL,
    channel        TEXT,
    gateway        TEXT    NOT NULL,
    file           TEXT    NOT NULL,
    started_at_ms  BIGINT  NOT NULL,
    ended_at_ms    BIGINT,
    bytes          BIGINT  NOT NULL DEFAULT 0,
    status         TEXT    NOT NULL,
    detail         TEXT
);
CREATE INDEX recordings_link ON recordings (link_id, started_at_ms);
CREATE INDEX recordings_session ON recordings (session_id);
CREATE INDEX recordings_started ON recordings (started_at_ms);
