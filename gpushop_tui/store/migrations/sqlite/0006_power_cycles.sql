-- Power off, power on. A session may now be stopped with its disk kept ('stopped'), started
-- again ('starting'), and a session whose instance is destroyed has 'ended' (such rows said
-- 'stopped' before). Closed billing stretches of each power cycle are kept as JSON in `cycles`.
-- SQLite cannot change a CHECK in place: the sessions and budgets tables are rebuilt (the store
-- runs migrations with foreign keys off and checks them before it commits).

CREATE TABLE sessions_new (
    id TEXT PRIMARY KEY,
    consumer TEXT NOT NULL,
    provider TEXT NOT NULL,
    offer_id TEXT NOT NULL,
    offer_json TEXT NOT NULL,
    label TEXT NOT NULL UNIQUE,
    instance_id TEXT,
    status TEXT NOT NULL CHECK (status IN
        ('pending', 'provisioning', 'running', 'stopping', 'stopped', 'starting', 'ended',
         'failed')),
    instance TEXT NOT NULL CHECK (instance IN
        ('none', 'creating', 'live', 'destroying', 'gone', 'unknown')),
    ssh_host TEXT,
    ssh_port INTEGER,
    ssh_user TEXT,
    key_path TEXT,
    host_key TEXT,
    workload TEXT NOT NULL,
    reservation_hours REAL NOT NULL,
    expires_at TEXT NOT NULL,
    hard_max_at TEXT NOT NULL,
    hard_max_override TEXT,
    idle_timeout_min REAL NOT NULL,
    storage_policy TEXT NOT NULL CHECK (storage_policy IN ('destroy', 'keep')),
    price_per_hour REAL,
    created_at TEXT NOT NULL,
    state_entered_at TEXT NOT NULL,
    instance_created_at TEXT,
    instance_gone_at TEXT,
    error TEXT,
    request_id TEXT UNIQUE,
    version INTEGER NOT NULL DEFAULT 0,
    destroy_attempts INTEGER NOT NULL DEFAULT 0,
    next_destroy_at TEXT,
    last_busy_at TEXT,
    idle_reason TEXT,
    stopped_at TEXT,
    stopped_price_per_hour REAL,
    workload_spec TEXT,
    workload_phase TEXT,
    workload_started_at TEXT,
    endpoint TEXT,
    endpoint_public TEXT,
    keep_disk INTEGER NOT NULL DEFAULT 0,
    keep_days REAL,
    keep_until TEXT,
    idle_action TEXT NOT NULL DEFAULT 'destroy' CHECK (idle_action IN ('destroy', 'stop')),
    power_requested_at TEXT,
    cycles TEXT NOT NULL DEFAULT '[]'
);

INSERT INTO sessions_new (
    id, consumer, provider, offer_id, offer_json, label, instance_id, status, instance,
    ssh_host, ssh_port, ssh_user, key_path, host_key, workload, reservation_hours, expires_at,
    hard_max_at, hard_max_override, idle_timeout_min, storage_policy, price_per_hour,
    created_at, state_entered_at, instance_created_at, instance_gone_at, error, request_id,
    version, destroy_attempts, next_destroy_at, last_busy_at, idle_reason, stopped_at,
    stopped_price_per_hour, workload_spec, workload_phase, workload_started_at, endpoint,
    endpoint_public, keep_disk
)
SELECT
    id, consumer, provider, offer_id, offer_json, label, instance_id,
    CASE WHEN status = 'stopped' AND instance IN ('none', 'gone') THEN 'ended' ELSE status END,
    instance, ssh_host, ssh_port, ssh_user, key_path, host_key, workload, reservation_hours,
    expires_at, hard_max_at, hard_max_override, idle_timeout_min, storage_policy,
    price_per_hour, created_at, state_entered_at, instance_created_at, instance_gone_at, error,
    request_id, version, destroy_attempts, next_destroy_at, last_busy_at, idle_reason,
    stopped_at, stopped_price_per_hour, workload_spec, workload_phase, workload_started_at,
    endpoint, endpoint_public,
    CASE WHEN status = 'stopping' AND storage_policy = 'keep' THEN 1 ELSE 0 END
FROM sessions;

DROP TABLE sessions;
ALTER TABLE sessions_new RENAME TO sessions;
CREATE INDEX sessions_state ON sessions (status, instance);
CREATE INDEX sessions_consumer ON sessions (consumer, created_at);
CREATE UNIQUE INDEX sessions_provider_instance ON sessions (provider, instance_id);
CREATE INDEX sessions_billing ON sessions (instance_created_at, instance_gone_at);

CREATE TABLE budgets_new (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN
        ('monthly_spend', 'concurrent_sessions', 'burn_rate', 'disk_per_day')),
    limit_value REAL NOT NULL CHECK (limit_value > 0),
    action TEXT NOT NULL CHECK (action IN ('warn', 'block', 'stop')),
    created_at TEXT NOT NULL,
    UNIQUE (scope, kind)
);
INSERT INTO budgets_new (id, scope, kind, limit_value, action, created_at)
SELECT id, scope, kind, limit_value, action, created_at FROM budgets;
DROP TABLE budgets;
ALTER TABLE budgets_new RENAME TO budgets;
