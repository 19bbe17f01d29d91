"""swapmeet.cli: the `swapmeet` command. Nothing imports this package."""
