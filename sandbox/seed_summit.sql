-- The sandbox's Summit (sandbox/summit.py, served under /summit): its tables. Applied at every
-- `python -m sandbox up`, so it only creates what is missing. The first policy bundle is not
-- here: `up` activates the one 1.0.0 ships (sandbox/releases/1.0.0/policy/bundle.json) when
-- no bundle is active.

-- Every bundle ever activated, newest last; at most one active per name (the one evaluations use).
CREATE TABLE IF NOT EXISTS summit_policy_bundles (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL,
    version      text NOT NULL,
    document     json NOT NULL,  -- json, not jsonb: GET answers the document as it was uploaded
    active       boolean NOT NULL DEFAULT false,
    activated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS summit_policy_bundles_one_active
    ON summit_policy_bundles (name) WHERE active;

CREATE TABLE IF NOT EXISTS summit_users (
    id            text PRIMARY KEY,
    password_hash text NOT NULL,
    clearances    text[] NOT NULL DEFAULT '{}',
    roles         text[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS summit_sessions (
    token      text PRIMARY KEY,
    user_id    text NOT NULL REFERENCES summit_users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS summit_entities (
    id             text PRIMARY KEY,
    name           text NOT NULL,
    classification text NOT NULL CHECK (classification IN ('U', 'C', 'S', 'TS')),
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- A high-risk operation waiting for (or carried out after) a second person's approval. entity
-- is what the operation acts on, as it was requested; result what carrying it out answered.
CREATE TABLE IF NOT EXISTS summit_approvals (
    id             text PRIMARY KEY,
    operation      text NOT NULL,
    resource       text NOT NULL,
    entity         json NOT NULL,
    requested_by   text NOT NULL,
    policy_version text,
    status         text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'failed')),
    approved_by    text,
    result         json,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    decided_at     timestamptz
);
CREATE INDEX IF NOT EXISTS summit_approvals_resource ON summit_approvals (resource);

-- The audit trail (GA 6.1 "Audit trail records all actions"): append-only. Test-data cleanup
-- leaves it alone, and the trigger below refuses any UPDATE or DELETE of an event.
CREATE TABLE IF NOT EXISTS summit_audit (
    id             bigserial PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor          text NOT NULL,
    action         text NOT NULL,
    resource       text,
    decision       text NOT NULL,
    policy_version text,
    detail         text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS summit_audit_actor ON summit_audit (actor);
CREATE INDEX IF NOT EXISTS summit_audit_resource ON summit_audit (resource);

CREATE OR REPLACE FUNCTION summit_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'summit_audit is append-only: % refused', TG_OP;
END;
$$;
CREATE OR REPLACE TRIGGER summit_audit_append_only
    BEFORE UPDATE OR DELETE ON summit_audit
    FOR EACH ROW EXECUTE FUNCTION summit_audit_append_only();
