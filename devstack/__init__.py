"""The local development stack: a supervisor for real servers on free ports, a local S3
endpoint, generated credentials and fault injection. Runs from a checkout; not installed."""
