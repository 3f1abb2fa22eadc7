"""Adapters and plumbing: settings, NATS topology, metadata DB, PostgreSQL admin, supervisor."""
