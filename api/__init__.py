"""The HTTP API (FastAPI). Imports the service through ``matchsvc`` only."""
