"""The data-host agent: executes commands against PostgreSQL and PgBouncer as sagas."""
