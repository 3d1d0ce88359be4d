"""Ray Serve applications (thin wrappers over :mod:`raypipe.serve`)."""
