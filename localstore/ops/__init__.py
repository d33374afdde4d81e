"""localstore.ops."""
