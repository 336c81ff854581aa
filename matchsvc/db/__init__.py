"""Database access: ORM models, engine/session factory, embedded server, migrations."""
