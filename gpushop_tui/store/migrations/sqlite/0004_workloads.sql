-- Workloads: what a session runs on its node (JSON of models.WorkloadSpec; NULL for sessions
-- from before, which ran SSH only), where it stands, when it was launched, and its endpoint.

ALTER TABLE sessions ADD COLUMN workload_spec TEXT;
ALTER TABLE sessions ADD COLUMN workload_phase TEXT;
ALTER TABLE sessions ADD COLUMN workload_started_at TEXT;
ALTER TABLE sessions ADD COLUMN endpoint TEXT;

-- A benchmark measured on a session's own node names that session and its time to first token.
ALTER TABLE benchmarks ADD COLUMN session_id TEXT;
ALTER TABLE benchmarks ADD COLUMN time_to_first_token_s REAL;
