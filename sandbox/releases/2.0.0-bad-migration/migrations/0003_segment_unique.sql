-- 2.0.0-bad-migration, step 2 of 2: assumes a segment names one customer. On real data many
-- customers share a segment, so building the index fails with a unique violation.
CREATE UNIQUE INDEX customers_segment_key ON customers (segment);
