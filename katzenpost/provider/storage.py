"""Building the user database and spool a provider configuration asks for, and the one place
their blocking calls run: a small thread pool, so the I/O thread never waits on a disk or a
database server."""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging

from katzenpost.config import BACKEND_EMBEDDED, BACKEND_EXTERN, BACKEND_SQL
from katzenpost.provider.postgres import SQLDatabase, SQLDatabaseError
from katzenpost.provider.spool.postgres import PostgresSpool
from katzenpost.provider.spool.sqlite import SQLiteSpool
from katzenpost.provider.userdb.extern import ExternUserDB
from katzenpost.provider.userdb.postgres import PostgresUserDB
from katzenpost.provider.userdb.sqlite import SQLiteUserDB

log = logging.getLogger("katzenpost.provider")


class Storage:
    """The provider's user database, spool and (when configured) shared SQL database."""

    def __init__(self, provider_cfg, num_provider_workers: int):
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, num_provider_workers), thread_name_prefix="katzenpost-provider")
        self.sqldb = self.userdb = self.spool = None
        self._cfg, self._workers = provider_cfg, num_provider_workers

    async def run(self, function, *args):
        """Run one blocking storage call on the storage threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(function, *args))

    def open(self) -> None:
        """Open the backends (blocking; call through `run`). Raises on any unusable database."""
        cfg = self._cfg
        try:
            if cfg.sql_db is not None and BACKEND_SQL in (cfg.user_db.backend, cfg.spool_db.backend):
                self.sqldb = SQLDatabase(cfg.sql_db.data_source_name, num_provider_workers=self._workers)
            self.userdb = self._open_userdb(cfg)
            self.spool = self._open_spool(cfg)
        except BaseException:
            self.close()
            raise

    def _open_userdb(self, cfg):
        backend = cfg.user_db.backend
        if backend == BACKEND_EXTERN:
            return ExternUserDB(cfg.user_db.extern_provider_url)
        if backend == BACKEND_SQL:
            return PostgresUserDB(self.sqldb)
        assert backend == BACKEND_EMBEDDED, backend
        return SQLiteUserDB(cfg.user_db.bolt_user_db, trust_on_first_use=cfg.trust_on_first_use)

    def _open_spool(self, cfg):
        if cfg.spool_db.backend == BACKEND_SQL:
            if not self.sqldb.spool_only and cfg.user_db.backend != BACKEND_SQL:
                # The full schema's spool hangs off its own users table, which only the sql
                # UserDB fills: messages to anyone else would be stored with no owner.
                raise SQLDatabaseError("sqldb: a full (not spool-only) SQL database holds the spool "
                                       "only together with the sql UserDB; create a spool-only one")
            return PostgresSpool(self.sqldb)
        return SQLiteSpool(cfg.spool_db.bolt_spool_db)

    def close(self) -> None:
        for part in (self.spool, self.userdb, self.sqldb):
            if part is not None:
                try:
                    part.close()
                except Exception as err:
                    log.warning("closing %s: %s", type(part).__name__, err)
        self.spool = self.userdb = self.sqldb = None

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)
        self.close()
