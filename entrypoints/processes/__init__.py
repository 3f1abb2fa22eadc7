"""One module per platform process: what it builds and runs, importing only what it needs (a
process starts in a fraction of the time the whole platform's imports take)."""
