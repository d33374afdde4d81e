"""localstore.sync."""
