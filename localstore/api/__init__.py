"""localstore.api."""
