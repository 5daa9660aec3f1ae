"""Benchmark scripts and the adapters that turn the public datasets into `recs.data.schema.Dataset`."""
