"""Use cases. Each public function owns its transaction: it commits on success and rolls back on error."""
