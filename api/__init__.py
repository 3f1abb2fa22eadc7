"""The FastAPI application: routes, auth, dependencies, error mapping."""
