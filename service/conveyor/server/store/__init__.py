"""PostgreSQL access: the connection pool, named SQL files and migrations.

SQL has a name and a home: hot-path statements live in `queries/<name>.sql` and are
loaded with `conveyor.server.store.sql.load`; schema changes are numbered files in
`migrations/`; `schema.sql` is the hand-written picture of the result, kept equal to the
migrations by tests/test_migrations.py.
"""
