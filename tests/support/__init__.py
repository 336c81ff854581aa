"""Factories shared by the HTTP tests."""
