-- The old secret stays valid for the grace period so receivers can switch over.
UPDATE projects SET
  previous_webhook_secret = webhook_secret,
  previous_secret_expire_time = now() + %(grace)s,
  webhook_secret = %(secret)s,
  update_time = now()
WHERE id = %(id)s
RETURNING webhook_secret, previous_webhook_secret, previous_secret_expire_time
