"""Compiled hot paths (Cython + C): pure functions on buffers, no I/O, no logging."""
