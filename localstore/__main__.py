"""``python -m localstore``: the command line."""

import sys

try:
    from localstore.cli import main
except KeyboardInterrupt:  # Ctrl-C while starting: nothing was done
    print("localstore: interrupted", file=sys.stderr)
    sys.exit(130)

main()
