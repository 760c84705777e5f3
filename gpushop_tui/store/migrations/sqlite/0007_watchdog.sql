-- The node's own deadline watchdog (a kill path that works with no gpushop process left):
-- the deadline it holds in this power cycle, and why it could not be armed or moved.

ALTER TABLE sessions ADD COLUMN watchdog_deadline TEXT;
ALTER TABLE sessions ADD COLUMN watchdog_error TEXT;
