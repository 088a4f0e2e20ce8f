-- The sandbox's Granter (sandbox/granter.py, served under /granter): its tables and a catalogue of
-- grants to search. Applied at every `python -m sandbox up`, so it only creates what is missing.
CREATE TABLE IF NOT EXISTS granter_users (
    id            bigserial PRIMARY KEY,
    email         text NOT NULL UNIQUE,
    name          text NOT NULL,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS granter_sessions (
    token      text PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES granter_users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- source: 'catalogue' for the seeded grants, else the label of the scrape that brought it in.
CREATE TABLE IF NOT EXISTS granter_grants (
    id           bigserial PRIMARY KEY,
    title        text NOT NULL,
    funder       text NOT NULL,
    category     text NOT NULL,
    amount_cents bigint NOT NULL CHECK (amount_cents > 0),
    deadline     date NOT NULL,
    source       text NOT NULL,
    source_url   text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS granter_grants_source ON granter_grants (source);

CREATE TABLE IF NOT EXISTS granter_extractions (
    id         bigserial PRIMARY KEY,
    label      text NOT NULL,
    extractor  text NOT NULL,
    fields     jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- 60 grants, the same on every machine: 4 categories, amounts from 5 000 to 95 000, deadlines
-- spread over 2026.
INSERT INTO granter_grants (title, funder, category, amount_cents, deadline, source)
SELECT format('%s grant %s', (ARRAY['Research', 'Education', 'Health', 'Environment'])[i % 4 + 1],
              lpad(i::text, 2, '0')),
       format('Foundation %s', i % 7 + 1),
       (ARRAY['research', 'education', 'health', 'environment'])[i % 4 + 1],
       (i * 1500 % 90000 + 5000) * 100,
       date '2026-01-15' + (i * 6),
       'catalogue'
FROM generate_series(1, 60) AS i
WHERE NOT EXISTS (SELECT 1 FROM granter_grants WHERE source = 'catalogue');
