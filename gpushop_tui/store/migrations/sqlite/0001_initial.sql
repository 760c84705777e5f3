-- The first schema: everything DESIGN.md §2-§6 keeps. Portable SQL: no SQLite-only functions,
-- UTC ISO-8601 text timestamps (fixed width, so they sort), compare-and-set via UPDATE ... WHERE.

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    consumer TEXT NOT NULL,
    provider TEXT NOT NULL,
    offer_id TEXT NOT NULL,
    offer_json TEXT NOT NULL,
    label TEXT NOT NULL UNIQUE,
    instance_id TEXT,
    status TEXT NOT NULL CHECK (status IN
        ('pending', 'provisioning', 'running', 'stopping', 'stopped', 'failed')),
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
    version INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_state ON sessions (status, instance);
CREATE INDEX sessions_consumer ON sessions (consumer, created_at);
CREATE UNIQUE INDEX sessions_provider_instance ON sessions (provider, instance_id);

CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    session_id TEXT REFERENCES sessions (id),
    message TEXT NOT NULL,
    data_json TEXT NOT NULL
);
CREATE INDEX audit_session ON audit (session_id, id);
CREATE INDEX audit_at ON audit (at);

CREATE TABLE cost_entries (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id),
    consumer TEXT NOT NULL,
    provider TEXT NOT NULL,
    gpu_name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('compute', 'storage')),
    rate_per_hour REAL NOT NULL CHECK (rate_per_hour >= 0),
    started_at TEXT NOT NULL,
    ended_at TEXT
);
CREATE INDEX cost_entries_session ON cost_entries (session_id);
CREATE INDEX cost_entries_started ON cost_entries (started_at);

-- scope is a consumer id, or '*' for the global budget (NULL would defeat the UNIQUE).
CREATE TABLE budgets (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('monthly_spend', 'concurrent_sessions', 'burn_rate')),
    limit_value REAL NOT NULL CHECK (limit_value > 0),
    action TEXT NOT NULL CHECK (action IN ('warn', 'block', 'stop')),
    created_at TEXT NOT NULL,
    UNIQUE (scope, kind)
);

-- A threshold (50/80/100 %) fires once per budget per month, and remembers that it did.
CREATE TABLE budget_alerts (
    budget_id INTEGER NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    month TEXT NOT NULL,
    threshold INTEGER NOT NULL,
    fired_at TEXT NOT NULL,
    PRIMARY KEY (budget_id, month, threshold)
);

CREATE TABLE benchmarks (
    id INTEGER PRIMARY KEY,
    gpu_name TEXT NOT NULL,
    gpu_count INTEGER NOT NULL,
    model TEXT NOT NULL,
    tokens_per_second REAL NOT NULL CHECK (tokens_per_second > 0),
    runtime TEXT,
    provider TEXT,
    price_per_hour REAL,
    measured_at TEXT,
    source TEXT NOT NULL
);
CREATE INDEX benchmarks_gpu_model ON benchmarks (gpu_name, model);

CREATE TABLE offer_failures (
    id INTEGER PRIMARY KEY,
    offer_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    gpu_name TEXT,
    session_id TEXT REFERENCES sessions (id),
    reason TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX offer_failures_offer ON offer_failures (offer_id, at);

-- One row per lease name ('supervisor'): exactly one process acts at a time.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    pid INTEGER NOT NULL,
    acquired_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
