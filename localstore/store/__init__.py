"""localstore.store."""
