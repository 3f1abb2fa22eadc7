"""Everything that acts on messages: the data-host agent and the projector."""
