-- 2.0.0-bad-migration, step 1 of 2: a segment per customer by order count.
-- This one succeeds and commits, so the failure of step 2 leaves the schema half way.
ALTER TABLE customers ADD COLUMN segment text;

UPDATE customers AS c
SET segment = CASE WHEN counts.n >= 6 THEN 'frequent' WHEN counts.n >= 3 THEN 'regular' ELSE 'occasional' END
FROM (
    SELECT customers.id, count(orders.id) AS n
    FROM customers LEFT JOIN orders ON orders.customer_id = customers.id
    GROUP BY customers.id
) AS counts
WHERE counts.id = c.id;
