-- 2.0.0: each customer's tier, from what they have ordered so far.
-- Expand only: the column gets a default, so 1.0.0 keeps working on this schema.
ALTER TABLE customers ADD COLUMN tier text;

UPDATE customers AS c
SET tier = CASE
        WHEN totals.total_cents >= 150000 THEN 'gold'
        WHEN totals.total_cents >= 100000 THEN 'silver'
        ELSE 'bronze'
    END
FROM (
    SELECT customers.id, coalesce(sum(orders.amount_cents), 0) AS total_cents
    FROM customers LEFT JOIN orders ON orders.customer_id = customers.id
    GROUP BY customers.id
) AS totals
WHERE totals.id = c.id;

ALTER TABLE customers ALTER COLUMN tier SET DEFAULT 'bronze';
ALTER TABLE customers ALTER COLUMN tier SET NOT NULL;
ALTER TABLE customers ADD CONSTRAINT customers_tier_check CHECK (tier IN ('bronze', 'silver', 'gold'));
