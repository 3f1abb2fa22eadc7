"""The projector: events → metadata read model and audit log, exactly once in effect."""
