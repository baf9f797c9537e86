"""Logger settings a harness needs for the length of one input, then restored.

Harnesses also run inside the pytest process (tests/test_fuzz_regressions.py replays the seeds
in-process); a level, handler or `propagate` changed at import time would leak into every later
test of that process (a silenced logger makes a log-content test pass or fail for the wrong
reason)."""
import logging
from contextlib import contextmanager


@contextmanager
def scoped_logger(name: str, *, level=None, handler=None, propagate=None):
    logger = logging.getLogger(name)
    saved = (logger.level, logger.propagate)
    if level is not None:
        logger.setLevel(level)
    if propagate is not None:
        logger.propagate = propagate
    if handler is not None:
        logger.addHandler(handler)
    try:
        yield logger
    finally:
        if handler is not None:
            logger.removeHandler(handler)
        logger.propagate = saved[1]
        if logger.level != saved[0]:
            logger.setLevel(saved[0])


class ErrorRecords(logging.Handler):
    """Collects ERROR records: a connection handler that crashed is logged that way."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record)
