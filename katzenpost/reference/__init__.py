"""Pure-Python twins of the compiled _core modules: used by tests and as benchmark baselines only."""
