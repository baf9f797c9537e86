"""A real SQLite user database per fuzz input, behind the interface the provider's handlers
use (`provider.storage.Storage`: `userdb`, `spool.remove`, `run`), in a temporary directory
(in memory where /dev/shm exists) removed at exit."""
import atexit
import os
import shutil
import tempfile
from contextlib import contextmanager

from katzenpost.provider.userdb.sqlite import SQLiteUserDB

_DIR = tempfile.mkdtemp(prefix="kp-fuzz-userdb-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
atexit.register(shutil.rmtree, _DIR, True)
_COUNTER = [0]


class Storage:
    """The blocking calls run inline (the fuzz harness is single-threaded)."""

    def __init__(self, path):
        self.userdb = SQLiteUserDB(path)
        self.spool = self

    def remove(self, user):  # the spool's remove: nothing is spooled here
        pass

    async def run(self, fn, *args):
        return fn(*args)


@contextmanager
def fresh_storage():
    """A Storage over a new, empty user database; the files are gone afterwards."""
    _COUNTER[0] += 1
    path = os.path.join(_DIR, f"users-{_COUNTER[0]}.db")
    storage = Storage(path)
    try:
        yield storage
    finally:
        storage.userdb.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
