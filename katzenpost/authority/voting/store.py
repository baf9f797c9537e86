"""The voting authority's persistence: the non-voting store (descriptors, documents) plus the
current round, so a restarted authority serves the same documents and resumes its round.

The reference persists only descriptors and documents; a restart after its vote forfeits the
round (peers hold its vote but never see its reveal). Here the round's votes, reveals and
signed consensus certificates (its own and its peers') and the round's chain state (genesis
epoch, PriorSharedRandom) are kept too, in the same SQLite file (0600). Raw bytes only:
checking them is the state's job, on restore as on receipt.
"""
from __future__ import annotations

import json

from katzenpost.authority.store import AuthorityStore

# Per-round tables: (epoch, peer identity) -> raw bytes.
ROUND_TABLES = ("votes", "reveals", "certificates")


class VotingStore(AuthorityStore):
    def _create_schema(self) -> None:
        super()._create_schema()
        for table in ROUND_TABLES:
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} (epoch INTEGER NOT NULL, "
                             "identity BLOB NOT NULL, raw BLOB NOT NULL, "
                             "PRIMARY KEY (epoch, identity))")
        self._db.execute("CREATE TABLE IF NOT EXISTS rounds (epoch INTEGER PRIMARY KEY, "
                         "chain TEXT NOT NULL)")

    def put_round_item(self, table: str, epoch: int, identity: bytes, raw: bytes) -> None:
        """Store a vote, reveal or certificate; the first one stored for (epoch, identity)
        stands, as in memory."""
        self._write(f"INSERT OR IGNORE INTO {_table(table)} VALUES (?, ?, ?)",
                    (epoch, identity, raw))

    def round_items(self, table: str, epoch: int) -> dict[bytes, bytes]:
        rows = self._read(f"SELECT identity, raw FROM {_table(table)} WHERE epoch = ?", (epoch,))
        return {bytes(identity): bytes(raw) for identity, raw in rows}

    def put_chain(self, epoch: int, genesis_epoch: int, prior_srv: list[bytes] | None) -> None:
        """The genesis epoch and PriorSharedRandom this authority votes with for `epoch`
        (None: none yet since the process started, encoded as JSON null in its vote)."""
        prior = None if prior_srv is None else [p.hex() for p in prior_srv]
        chain = json.dumps({"genesis": genesis_epoch, "prior": prior})
        self._write("INSERT OR REPLACE INTO rounds VALUES (?, ?)", (epoch, chain))

    def chain(self, epoch: int) -> tuple[int, list[bytes] | None] | None:
        rows = self._read("SELECT chain FROM rounds WHERE epoch = ?", (epoch,))
        if not rows:
            return None
        try:
            chain = json.loads(rows[0][0])
            prior = chain["prior"]
            return (int(chain["genesis"]),
                    None if prior is None else [bytes.fromhex(p) for p in prior])
        except (ValueError, KeyError, TypeError):
            return None  # a damaged row only costs the resumption of that round

    def prune_before(self, epoch: int) -> None:
        super().prune_before(epoch)
        for table in ROUND_TABLES + ("rounds",):
            self._write(f"DELETE FROM {table} WHERE epoch < ?", (epoch,))


def _table(name: str) -> str:
    if name not in ROUND_TABLES:
        raise ValueError(f"voting store: no table {name!r}")
    return name
