-- Summit 4.0.0: entities carry labels (a column with a default: no table rewrite).
ALTER TABLE summit_entities ADD COLUMN labels text[] NOT NULL DEFAULT '{}';
