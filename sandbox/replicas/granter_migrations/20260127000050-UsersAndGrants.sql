-- Granter 1.9.0's schema as the runbook's backup names it (granter_db: users, grants): the
-- sandbox's Granter tables (sandbox/seed_granter.sql, applied first by the replica's tool) under
-- the names the runbook's team queries.
CREATE VIEW users AS SELECT id, email, name, created_at FROM granter_users;
CREATE VIEW grants AS SELECT * FROM granter_grants;
