"""MetaHub's own persistent state (SQLAlchemy Core; SQLite by default)."""
