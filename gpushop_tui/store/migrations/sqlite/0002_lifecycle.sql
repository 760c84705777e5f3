-- The lifecycle supervisor's own bookkeeping on each session: the destroy queue's backoff (so a
-- restart keeps retrying where it stood) and idle detection (so any process can show why).

ALTER TABLE sessions ADD COLUMN destroy_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN next_destroy_at TEXT;
ALTER TABLE sessions ADD COLUMN last_busy_at TEXT;
ALTER TABLE sessions ADD COLUMN idle_reason TEXT;
