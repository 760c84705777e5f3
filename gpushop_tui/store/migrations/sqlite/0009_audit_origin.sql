-- Which process wrote each audit row ("host:pid:token"), so a process can follow the events
-- that other processes (another --serve replica, a cron reconcile) record in a shared database.
ALTER TABLE audit ADD COLUMN origin TEXT;
