"""The work behind saga steps, grouped by what it acts on; ``consumers.agent.sagas`` orders it into sagas."""
