"""Helpers every package uses: input errors, atomic writes, the command-line main wrapper."""
