"""A local stand-in for the Mistral observability datasets API (FastAPI + uvicorn).

    with EmulatorServer() as server:        # a real HTTP server on 127.0.0.1:<free port>
        dataset_id = seed_dataset(server.state, 1000)
        ...  # point any client at server.url with any bearer key
"""

from .app import create_app
from .seed import make_record, seed_dataset
from .server import EmulatorServer, serve
from .state import EmulatorError, EmulatorState

__all__ = [
    "EmulatorError",
    "EmulatorServer",
    "EmulatorState",
    "create_app",
    "make_record",
    "seed_dataset",
    "serve",
]
