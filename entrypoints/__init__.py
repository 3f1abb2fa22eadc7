"""Entry points: the ``pgplane`` command and the composition root that wires every process."""
