-- Schema version 3: a link's clipboard policy (`none`, `to_guest`, `from_guest`, `both`).
-- Links made before it existed had no clipboard, and keep none.

ALTER TABLE links ADD COLUMN clipboard TEXT NOT NULL DEFAULT 'none';
