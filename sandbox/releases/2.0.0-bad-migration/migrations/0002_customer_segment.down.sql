-- Undo 0002_customer_segment.
ALTER TABLE customers DROP COLUMN segment;
