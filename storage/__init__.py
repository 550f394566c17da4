"""storage: SQLAlchemy models and the trial store (SQLite by default, PostgreSQL by URL)."""
