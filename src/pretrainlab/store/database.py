"""The results database: one SQLite file, safe with several processes writing at once.

Every write is one `BEGIN IMMEDIATE` transaction (the write lock is taken up front, so two writers never
deadlock upgrading read locks); WAL mode lets readers run during writes; SQLite's busy timeout waits for
the lock, and a retry with jittered back-off covers the "database is locked" errors it still lets through.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TypeVar

from pretrainlab.errors import PretrainlabError
from pretrainlab.store.rows import EVALUATION_COLUMNS, CheckpointRow, EvaluationRow, RunRow
from pretrainlab.store.schema import ensure_schema

log = logging.getLogger(__name__)

# PRETRAINLAB_STORE moves the default, e.g. so a test suite never writes into the working folder.
DEFAULT_STORE = Path(os.environ.get("PRETRAINLAB_STORE", "runs/pretrainlab.db"))
EXTERNAL_LOG_SUFFIX = ".external.jsonl"
T = TypeVar("T")


def is_busy(error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    return "locked" in message or "busy" in message


class ResultsStore:
    """Args:
        path: the SQLite file (created with its folder on first write).
        busy_seconds: how long SQLite itself waits for a lock before reporting "database is locked".
        retry_seconds: how long to keep retrying a transaction that still met a lock.
    """

    def __init__(self, path: Path | str = DEFAULT_STORE, busy_seconds: float = 10.0,
                 retry_seconds: float = 120.0) -> None:
        self.path = Path(path)
        self.busy_seconds = busy_seconds
        self.retry_seconds = retry_seconds
        self._ready = False

    @property
    def external_log(self) -> Path:
        """Where evaluations of backbones without a run folder (timm:NAME) are logged beside the store."""
        return self.path.with_name(f"{self.path.stem}{EXTERNAL_LOG_SUFFIX}")

    def require_existing(self) -> ResultsStore:
        if not self.path.is_file():
            raise PretrainlabError(
                f"no results store at {self.path}; run `pretrainlab gauntlet BACKBONE --data SPEC` first, "
                "or `pretrainlab store rebuild` to index existing run folders"
            )
        return self

    # -- connections and transactions ----------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=self.busy_seconds, isolation_level=None)
        connection.execute(f"PRAGMA busy_timeout = {int(self.busy_seconds * 1000)}")
        return connection

    def _with_retry(self, work: Callable[[sqlite3.Connection], T]) -> T:
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.02
        while True:
            try:
                with closing(self._connect()) as connection:
                    return work(connection)
            except sqlite3.OperationalError as error:
                if not is_busy(error) or time.monotonic() > deadline:
                    raise PretrainlabError(f"results store {self.path}: {error}") from None
                log.debug("store busy (%s); retrying in %.2f s", error, delay)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
            except sqlite3.DatabaseError as error:
                raise PretrainlabError(f"{self.path} is not a usable results store ({error})") from None

    @staticmethod
    @contextmanager
    def _transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def _ensure_ready(self, connection: sqlite3.Connection) -> None:
        if self._ready:
            return
        # WAL persists in the file; switching needs no other connection mid-transaction, hence before BEGIN.
        connection.execute("PRAGMA journal_mode = WAL")
        with self._transaction(connection):
            ensure_schema(connection, str(self.path))
        self._ready = True

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `work(connection)` in one write transaction, retried as a whole if the store was locked."""

        def transaction(connection: sqlite3.Connection) -> T:
            self._ensure_ready(connection)
            with self._transaction(connection):
                return work(connection)

        return self._with_retry(transaction)

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        self.require_existing()

        def query(connection: sqlite3.Connection) -> T:
            self._ensure_ready(connection)
            return work(connection)

        return self._with_retry(query)

    # -- writes --------------------------------------------------------------------------------
    def add_evaluations(self, rows: Iterable[EvaluationRow]) -> int:
        """Inserts rows (a row whose uid is already stored is skipped); returns how many were new."""
        values = [row.to_sql() for row in rows]
        placeholders = ", ".join("?" * len(EVALUATION_COLUMNS))
        statement = f"INSERT OR IGNORE INTO evaluations ({', '.join(EVALUATION_COLUMNS)}) VALUES ({placeholders})"

        def insert(connection: sqlite3.Connection) -> int:
            before = connection.total_changes
            connection.executemany(statement, values)
            return connection.total_changes - before

        return self.write(insert)

    def index_run(self, run: RunRow, checkpoints: Iterable[CheckpointRow]) -> None:
        """Adds or refreshes one run folder and the files it left."""
        checkpoint_values = [checkpoint.to_sql() for checkpoint in checkpoints]

        def upsert(connection: sqlite3.Connection) -> None:
            connection.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", run.to_sql())
            connection.execute("DELETE FROM checkpoints WHERE run_path = ?", (run.path,))
            connection.executemany("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?)", checkpoint_values)

        self.write(upsert)

    def replace_all(self, collect: Callable[[], tuple[list[RunRow], list[CheckpointRow], list[EvaluationRow]]]
                    ) -> tuple[list[RunRow], list[CheckpointRow], list[EvaluationRow]]:
        """Replaces the whole content with what `collect()` returns, in one transaction: readers see the old
        store or the new one. `collect` runs inside the transaction, after the write lock is taken: a writer
        logs a row before it inserts it, so a row is either in what `collect` reads or inserted after this
        commit, never inserted in between and then deleted here. Returns what was collected."""

        def replace(connection: sqlite3.Connection) -> tuple[list[RunRow], list[CheckpointRow], list[EvaluationRow]]:
            runs, checkpoints, evaluations = collect()
            for table in ("evaluations", "checkpoints", "runs"):
                connection.execute(f"DELETE FROM {table}")
            connection.executemany("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                   [run.to_sql() for run in runs])
            connection.executemany("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?)",
                                   [checkpoint.to_sql() for checkpoint in checkpoints])
            placeholders = ", ".join("?" * len(EVALUATION_COLUMNS))
            connection.executemany(
                f"INSERT OR IGNORE INTO evaluations ({', '.join(EVALUATION_COLUMNS)}) VALUES ({placeholders})",
                [row.to_sql() for row in evaluations])
            return runs, checkpoints, evaluations

        return self.write(replace)

    # -- reads ---------------------------------------------------------------------------------
    def evaluations(self, data: str | None = None) -> list[EvaluationRow]:
        """Every stored evaluation row (of one dataset spec when `data` is given), oldest first."""
        query = f"SELECT {', '.join(EVALUATION_COLUMNS)} FROM evaluations"
        parameters: tuple[str, ...] = ()
        if data is not None:
            query += " WHERE data = ?"
            parameters = (data,)
        query += " ORDER BY created, id"
        return self.read(lambda connection: [EvaluationRow.from_sql(row)
                                             for row in connection.execute(query, parameters)])

    def count(self, table: str) -> int:
        if table not in ("runs", "checkpoints", "evaluations"):
            raise ValueError(f"unknown table '{table}'")
        return self.read(lambda connection: connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def data_specs(self) -> list[str]:
        return self.read(lambda connection: [row[0] for row in connection.execute(
            "SELECT DISTINCT data FROM evaluations ORDER BY data")])

    def runs(self) -> list[tuple[str, str, str | None]]:
        """(path, name, method) of every indexed run."""
        return self.read(lambda connection: list(connection.execute(
            "SELECT path, name, method FROM runs ORDER BY path")))
