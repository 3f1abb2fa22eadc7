"""Everything that puts messages on the bus."""
