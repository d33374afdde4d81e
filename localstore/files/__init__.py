"""localstore.files."""
