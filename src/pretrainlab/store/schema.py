"""The results store's tables, and the schema version kept in SQLite's `user_version`."""

from __future__ import annotations

import sqlite3

from pretrainlab.errors import PretrainlabError

SCHEMA_VERSION = 2

# One statement per entry: sqlite3's execute() runs a single statement, inside our own transaction.
TABLES = (
    """CREATE TABLE IF NOT EXISTS runs (
        path TEXT PRIMARY KEY,            -- the run folder, resolved
        name TEXT NOT NULL,
        method TEXT,
        backbone TEXT,
        data TEXT,
        config_json TEXT NOT NULL,        -- config.yaml as JSON
        steps INTEGER,                    -- last logged step of metrics.jsonl
        final_loss REAL,
        last_knn_top1 REAL,
        indexed_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        path TEXT PRIMARY KEY,
        run_path TEXT NOT NULL,
        kind TEXT NOT NULL,               -- 'export' (backbone.safetensors) or 'checkpoint'
        fingerprint TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        modified REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS evaluations (
        id INTEGER PRIMARY KEY,
        uid TEXT NOT NULL UNIQUE,         -- also in the run folder's evaluations.jsonl: rebuilds keep identities
        created REAL NOT NULL,
        session TEXT NOT NULL,            -- one gauntlet invocation
        backbone TEXT NOT NULL,           -- label: run folder or timm:NAME
        run_path TEXT,
        fingerprint TEXT NOT NULL,        -- of the weights evaluated: re-evaluations are identifiable
        data TEXT NOT NULL,
        protocol TEXT NOT NULL,
        metric TEXT NOT NULL,
        value REAL,                       -- NULL stands for NaN (SQLite stores no NaN)
        higher_is_better INTEGER NOT NULL,
        seed INTEGER NOT NULL,
        seconds REAL NOT NULL,            -- as the protocol reports it (some report per metric, some per call)
        settings_json TEXT NOT NULL,
        call_seconds REAL                 -- wall time of the whole protocol call for this seed, measured outside it
    )""",
    "CREATE INDEX IF NOT EXISTS evaluations_by_data ON evaluations (data, backbone, protocol, metric)",
    "CREATE INDEX IF NOT EXISTS checkpoints_by_run ON checkpoints (run_path)",
)

# (version, statements) bringing a store of the previous version up to `version`.
MIGRATIONS = (
    (2, ("ALTER TABLE evaluations ADD COLUMN call_seconds REAL",)),
)


def ensure_schema(connection: sqlite3.Connection, path: str) -> None:
    """Creates the tables of a new store; refuses a store written by a newer pretrainlab.

    Must run inside a write transaction so two processes creating one store do not race.
    """
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise PretrainlabError(
            f"results store {path} has schema version {version}, newer than this pretrainlab's {SCHEMA_VERSION}; "
            "upgrade pretrainlab or use another --store"
        )
    if version == SCHEMA_VERSION:
        return
    if version == 0:  # a new file: the current tables directly
        statements = list(TABLES)
    else:
        statements = [statement for target, steps in MIGRATIONS if version < target for statement in steps]
    for statement in statements:
        connection.execute(statement)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
