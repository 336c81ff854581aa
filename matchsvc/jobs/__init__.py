"""Batch jobs: matching, and the in-process scheduler that runs them periodically."""
