-- The real-sqlite workload: a small shop database built from generated rows, then queried with
-- indexes, joins, aggregates, subqueries and window functions, updated and queried again.
-- Deterministic: rows come from an LCG in recursive CTEs (no random()), and every query orders
-- its output completely.
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
PRAGMA cache_size = -16000;

CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT NOT NULL, region INTEGER, since INTEGER);
CREATE TABLE product (id INTEGER PRIMARY KEY, name TEXT NOT NULL, category INTEGER, price INTEGER);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER NOT NULL REFERENCES customer, day INTEGER);
CREATE TABLE item (order_id INTEGER NOT NULL REFERENCES orders, product INTEGER NOT NULL REFERENCES product,
                   qty INTEGER NOT NULL);

BEGIN;
WITH RECURSIVE g(n, x) AS (SELECT 1, 4242 UNION ALL SELECT n + 1, (x * 69069 + 1) % 4294967296 FROM g WHERE n < 4000)
INSERT INTO customer SELECT n, 'cust-' || (x % 100000), (x / 7) % 23, 2000 + (x / 11) % 25 FROM g;
WITH RECURSIVE g(n, x) AS (SELECT 1, 777 UNION ALL SELECT n + 1, (x * 69069 + 1) % 4294967296 FROM g WHERE n < 1500)
INSERT INTO product SELECT n, 'prod-' || hex(x % 65536), (x / 13) % 40, 99 + (x / 3) % 25000 FROM g;
WITH RECURSIVE g(n, x) AS (SELECT 1, 99 UNION ALL SELECT n + 1, (x * 69069 + 1) % 4294967296 FROM g WHERE n < 30000)
INSERT INTO orders SELECT n, 1 + (x / 5) % 4000, (x / 17) % 730 FROM g;
WITH RECURSIVE g(n, x) AS (SELECT 1, 31337 UNION ALL SELECT n + 1, (x * 69069 + 1) % 4294967296 FROM g WHERE n < 90000)
INSERT INTO item SELECT 1 + (x / 3) % 30000, 1 + ((x / 7) % 1500) * ((x / 9) % 2) + ((x / 11) % 40) * (1 - (x / 9) % 2),
                        1 + (x / 19) % 9 FROM g;
COMMIT;

CREATE INDEX item_order ON item (order_id);
CREATE INDEX item_product ON item (product);
CREATE INDEX orders_customer ON orders (customer, day);
CREATE INDEX product_category ON product (category, price);
ANALYZE;

.mode list
.separator |
SELECT 'counts', (SELECT count(*) FROM customer), (SELECT count(*) FROM product), (SELECT count(*) FROM orders),
       (SELECT count(*) FROM item);

-- revenue per region: a four-way join
SELECT 'region', c.region, count(DISTINCT o.id), sum(i.qty), sum(i.qty * p.price)
  FROM customer c JOIN orders o ON o.customer = c.id JOIN item i ON i.order_id = o.id
  JOIN product p ON p.id = i.product
 GROUP BY c.region ORDER BY c.region;

-- the best customers, ranked per region with a window function
SELECT 'best', region, rk, id, total FROM (
  SELECT c.region, c.id, sum(i.qty * p.price) AS total,
         rank() OVER (PARTITION BY c.region ORDER BY sum(i.qty * p.price) DESC, c.id) AS rk
    FROM customer c JOIN orders o ON o.customer = c.id JOIN item i ON i.order_id = o.id
    JOIN product p ON p.id = i.product
   GROUP BY c.id)
 WHERE rk <= 3 ORDER BY region, rk;

-- products never ordered, and categories by median-ish price (an index range scan per category)
SELECT 'unsold', count(*) FROM product p WHERE NOT EXISTS (SELECT 1 FROM item i WHERE i.product = p.id);
SELECT 'category', category, count(*), min(price), max(price), avg(price) FROM product
 GROUP BY category ORDER BY category;

-- monthly sales with a running total
SELECT 'month', m, s, sum(s) OVER (ORDER BY m) FROM (
  SELECT o.day / 30 AS m, sum(i.qty) AS s FROM orders o JOIN item i ON i.order_id = o.id GROUP BY m)
 ORDER BY m;

-- point lookups through the indexes
WITH RECURSIVE g(n, x) AS (SELECT 1, 5 UNION ALL SELECT n + 1, (x * 69069 + 1) % 4294967296 FROM g WHERE n < 2000)
SELECT 'lookups', count(*), sum(o.day), sum(i.qty) FROM g
  JOIN orders o ON o.customer = 1 + (g.x / 5) % 6000 AND o.day BETWEEN 100 AND 400
  JOIN item i ON i.order_id = o.id;

-- a price change, a cancellation of some orders, and the revenue again
BEGIN;
UPDATE product SET price = price * 11 / 10 WHERE category % 3 = 0;
DELETE FROM item WHERE order_id IN (SELECT id FROM orders WHERE day % 97 = 0);
DELETE FROM orders WHERE day % 97 = 0;
COMMIT;
SELECT 'after', count(*), sum(i.qty * p.price) FROM item i JOIN product p ON p.id = i.product;
SELECT 'integrity', count(*) FROM item i LEFT JOIN orders o ON o.id = i.order_id WHERE o.id IS NULL;
PRAGMA integrity_check;
