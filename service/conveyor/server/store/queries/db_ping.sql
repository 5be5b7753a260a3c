-- Proves the pool can reach the database (the database probe's health check).
SELECT 1
