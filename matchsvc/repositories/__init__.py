"""Data access. Functions take a ``Session`` and never commit: services own the transaction."""
