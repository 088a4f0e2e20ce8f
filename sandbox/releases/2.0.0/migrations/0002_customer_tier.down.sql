-- Undo 0002_customer_tier: 1.0.0 never reads the column.
ALTER TABLE customers DROP COLUMN tier;
