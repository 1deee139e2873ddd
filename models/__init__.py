"""models — see the README's status section."""
