-- UpdateApiKey: the fields whose set_ flag is on. A system key is left alone (and
-- reported missing) unless %(allow_system)s, as DeleteApiKey does.
UPDATE api_keys SET
  display_name = CASE WHEN %(set_display_name)s THEN %(display_name)s ELSE display_name END,
  rate_limits = CASE WHEN %(set_rate_limits)s THEN %(rate_limits)s ELSE rate_limits END
WHERE project = %(project)s AND id = %(id)s AND (NOT system OR %(allow_system)s)
RETURNING id, project, role, display_name, system, create_time, last_used_time,
       rate_limits
