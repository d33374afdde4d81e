"""localstore — an offline, local-first store for Mistral AI observability dataset records.

Importing this package is cheap on purpose: the command line imports the network
stack (httpx) and the emulator (FastAPI) only for the commands that need them.
"""

__version__ = "0.1.0"
