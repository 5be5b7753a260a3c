-- 0025: redaction of task input (#21 point 3, domain/redaction.py). redact_paths lists
-- JSON Pointers or bare keys whose values keys below operator read as "<redacted>"; a
-- queue's add to its project's. webhook_full_input: whether webhook payloads carry
-- the stored input (false: redacted as for a viewer).
ALTER TABLE projects ADD COLUMN redact_paths text[] NOT NULL DEFAULT '{}';
ALTER TABLE projects ADD COLUMN webhook_full_input boolean NOT NULL DEFAULT false;
ALTER TABLE queues ADD COLUMN redact_paths text[] NOT NULL DEFAULT '{}';
