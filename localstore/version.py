"""The version (a leaf: the API client sends it as its User-Agent)."""

__version__ = "0.1.0"
