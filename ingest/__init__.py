"""ingest — see the README's status section."""
