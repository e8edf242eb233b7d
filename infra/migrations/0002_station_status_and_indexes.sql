-- A status column for stations and the indexes the backend's listing queries use.
ALTER TABLE stations ADD COLUMN status text NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'paused', 'archived'));
CREATE INDEX stations_owner_id_idx ON stations (owner_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
