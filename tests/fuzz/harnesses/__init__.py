"""One module per parser: TestOneInput(data), MAX_LEN, seeds() (see tests/fuzz/__init__.py)."""
