"""Workflows: what each command does, as functions returning plain data (the CLI renders it)."""
