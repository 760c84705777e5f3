-- The provider's own time limit on an instance (RunPod's terminate-after), set at create and
-- moved by stops and starts: a kill path that holds with no gpushop process and no node watchdog.

ALTER TABLE sessions ADD COLUMN provider_ttl_at TEXT;
