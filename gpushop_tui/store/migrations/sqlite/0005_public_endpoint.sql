-- A session's endpoint on the provider's public address (a published port guarded by the
-- endpoint token); NULL where the endpoint is reached only through an SSH tunnel.

ALTER TABLE sessions ADD COLUMN endpoint_public TEXT;
