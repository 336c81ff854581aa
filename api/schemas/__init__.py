"""Request and response bodies. Kept apart from the ORM models on purpose."""
