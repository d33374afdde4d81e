"""``python -m localstore``: the command line."""

from .cli import main

main()
