-- Deterministic demo data, loaded once by `python -m sandbox up` into a fresh database:
-- 200 customers and 1000 orders (5 per customer), the same on every machine.
INSERT INTO customers (name, email, created_at)
SELECT format('Customer %s', lpad(i::text, 3, '0')),
       format('customer%s@example.test', lpad(i::text, 3, '0')),
       timestamptz '2025-01-01 00:00:00+00' + i * interval '6 hours'
FROM generate_series(1, 200) AS i;

-- Customers are numbered 1..200 in a fresh database; order i belongs to customer (i % 200) + 1.
INSERT INTO orders (customer_id, amount_cents, created_at)
SELECT (i % 200) + 1,
       (i * 7919) % 50000 + 100,
       timestamptz '2025-03-01 00:00:00+00' + i * interval '1 hour'
FROM generate_series(1, 1000) AS i;
