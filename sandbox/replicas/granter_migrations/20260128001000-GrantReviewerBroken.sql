-- 2.0.0-bad-migration: a reviewer every grant must have, on a table whose rows have none:
-- PostgreSQL refuses it ("column contains null values") and the transaction changes nothing.
ALTER TABLE granter_grants ADD COLUMN reviewed_by bigint NOT NULL REFERENCES granter_users (id);
