"""The metadata database: tables, engine and schema creation."""
