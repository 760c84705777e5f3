-- Money is derived from each session's own timestamps and rates (a restart cannot lose what
-- was never held in memory): a kept instance records when it stopped and what its disk costs.
-- The ledger table of the first schema is dropped unused; budgets remember their creation.

ALTER TABLE sessions ADD COLUMN stopped_at TEXT;
ALTER TABLE sessions ADD COLUMN stopped_price_per_hour REAL;
CREATE INDEX sessions_billing ON sessions (instance_created_at, instance_gone_at);
DROP TABLE cost_entries;
