"""matchsvc: the service layer (settings, database, repositories, services, jobs, CLI, benchmarks)."""
