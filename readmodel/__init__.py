"""The read model shared by the API and the projector: its tables and how each event changes them."""
