"""Subcommands of the ``braze-cohorts`` command line (private)."""
