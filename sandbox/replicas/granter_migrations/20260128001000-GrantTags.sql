-- Granter 2.0.0: grants carry tags (a column with a default: no table rewrite).
ALTER TABLE granter_grants ADD COLUMN tags text[] NOT NULL DEFAULT '{}';
