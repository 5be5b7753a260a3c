UPDATE projects SET
  display_name = CASE WHEN %(set_display_name)s THEN %(display_name)s ELSE display_name END,
  callback_url = CASE WHEN %(set_callback_url)s THEN %(callback_url)s ELSE callback_url END,
  labels = CASE WHEN %(set_labels)s THEN %(labels)s ELSE labels END,
  update_time = now()
WHERE id = %(id)s
RETURNING id, display_name, callback_url, labels, create_time, update_time
