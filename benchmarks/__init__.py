"""Benchmarks behind `matchsvc bench ...`: each returns a JSON-able dict; ratios are measured in one run."""
