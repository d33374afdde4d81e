"""localstore.core."""
