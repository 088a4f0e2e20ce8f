-- 4.0.0-bad-migration: an owner every entity must have, on a table whose rows have none:
-- PostgreSQL refuses it ("column contains null values") and the transaction changes nothing.
ALTER TABLE summit_entities ADD COLUMN owner text NOT NULL REFERENCES summit_users (id);
