"""raypipe."""
