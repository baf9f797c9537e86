"""Katzenpost mix server and provider (2021 protocol suite), Python with Cython cores."""
__version__ = "0.1.0"
