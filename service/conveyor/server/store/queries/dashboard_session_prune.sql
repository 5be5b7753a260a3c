-- Sessions that ended a day ago or more are forgotten (run at each sign-in).
DELETE FROM dashboard_sessions
WHERE expire_time < now() - interval '1 day' OR revoke_time < now() - interval '1 day'
