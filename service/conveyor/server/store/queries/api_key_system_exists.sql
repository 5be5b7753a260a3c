SELECT EXISTS (SELECT 1 FROM api_keys WHERE system) AS present
