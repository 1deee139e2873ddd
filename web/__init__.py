"""web — see the README's status section."""
