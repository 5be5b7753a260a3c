-- Keeps the first value written: a replica that loses the race reads the winner's.
INSERT INTO server_secrets (name, value) VALUES (%(name)s, %(value)s)
ON CONFLICT (name) DO NOTHING
