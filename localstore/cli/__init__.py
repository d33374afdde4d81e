"""The command line (``localstore …``): ``main`` is the entry point."""

from localstore.cli.app import cli, main

__all__ = ["cli", "main"]
