-- Summit 3.0.0's schema as GA 3.1's backup names it (intelgraph: entities, audit_log): the
-- sandbox's Summit tables (sandbox/seed_summit.sql, applied first by the replica's tool) under
-- the names the runbook's team queries.
CREATE VIEW entities AS SELECT * FROM summit_entities;
CREATE VIEW audit_log AS SELECT * FROM summit_audit;
