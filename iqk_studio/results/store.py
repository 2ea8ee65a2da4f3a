"""The results store: one SQLite file (WAL) in the user's data folder holding every run and its
per-chunk values, written as they arrive so a killed app loses at most the chunk in flight."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from dataclasses import fields
from pathlib import Path

from iqk_studio.results.records import (
    CHUNK_FIELDS,
    ChunkRow,
    CostKey,
    CostRow,
    GroupRow,
    Run,
    RunSpec,
    RunSummary,
)

SCHEMA = 2  # 2: the optimizer's costs table (added to a version-1 file when opened)
ENV_DATA = "IQK_STUDIO_DATA"  # a folder that replaces the user data folder
FILE_NAME = "results.sqlite3"

_RUN_COLS = """
  id INTEGER PRIMARY KEY, kind TEXT NOT NULL, source TEXT NOT NULL, status TEXT NOT NULL,
  name TEXT NOT NULL DEFAULT '', created REAL NOT NULL, finished REAL, pid INTEGER, host TEXT,
  model_path TEXT, model_name TEXT, model_id TEXT, base_model_path TEXT, base_model_id TEXT,
  recipe TEXT, plan_bytes INTEGER, plan_bpw REAL, text_path TEXT, text_id TEXT, n_ctx INTEGER,
  chunks INTEGER, kv_type TEXT, engine TEXT NOT NULL DEFAULT '', engine_version TEXT NOT NULL
  DEFAULT '', command TEXT NOT NULL DEFAULT '[]', final_ppl REAL, final_ppl_err REAL,
  final_kld REAL, final_kld_err REAL, same_top REAL, message TEXT NOT NULL DEFAULT '',
  facts TEXT NOT NULL DEFAULT '{}', summary TEXT NOT NULL DEFAULT '{}'"""
_DDL = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS runs ({_RUN_COLS})",
    "CREATE TABLE IF NOT EXISTS chunks (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE "
    "CASCADE, idx INTEGER NOT NULL, " + ", ".join(f"{f} REAL" for f in CHUNK_FIELDS)
    + ", PRIMARY KEY (run_id, idx))",
    "CREATE TABLE IF NOT EXISTS groups (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE "
    "CASCADE, idx INTEGER NOT NULL, label TEXT NOT NULL, bytes_before INTEGER, bytes_after "
    "INTEGER, kld REAL, kld_err REAL, ln_ratio REAL, same_top REAL, seconds REAL, "
    "PRIMARY KEY (run_id, idx))",
    "CREATE INDEX IF NOT EXISTS runs_model ON runs(model_id)",
    "CREATE TABLE IF NOT EXISTS costs (model_id TEXT NOT NULL, text_id TEXT NOT NULL, n_ctx "
    "INTEGER NOT NULL, chunks INTEGER NOT NULL, imatrix_id TEXT NOT NULL, method TEXT NOT NULL, "
    "grp TEXT NOT NULL, type TEXT NOT NULL, kld REAL, kld_err REAL, ln_ratio REAL, err REAL, "
    "bytes INTEGER, seconds REAL, created REAL, PRIMARY KEY (model_id, text_id, n_ctx, chunks, "
    "imatrix_id, method, grp, type))",
]
_COST_KEY = ("model_id", "text_id", "n_ctx", "chunks", "imatrix_id", "method")
_COST_VALUES = ("kld", "kld_err", "ln_ratio", "err")
# RunSpec fields stored as such (command and facts are JSON)
_SPEC_COLS = tuple(f.name for f in fields(RunSpec) if f.name not in ("command", "facts"))
_UPDATABLE = set(_SPEC_COLS) | {"command", "facts", "summary", "final_ppl", "final_ppl_err",
                                "final_kld", "final_kld_err", "same_top", "message"}


class StoreError(Exception):
    """The store cannot be used (damaged file, newer schema, no such run): one line for users."""


def data_dir() -> Path:
    """$IQK_STUDIO_DATA, else the platform's user data folder for iqk-studio."""
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("iqk-studio", appauthor=False))


def default_path() -> Path:
    return data_dir() / FILE_NAME


def _nan(v) -> float:
    return math.nan if v is None else float(v)


def _num(v):
    """NaN and infinities are stored as NULL."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


class ResultsStore:
    """A connection to the store; usable from any thread (calls are serialised)."""

    def __init__(self, path=None):
        self.path = Path(path) if path is not None else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create {self.path.parent}: {e.strerror or e}") from None
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, timeout=10, check_same_thread=False,
                                       isolation_level=None)
            self._init()
        except sqlite3.DatabaseError as e:
            self._close_quietly()
            raise StoreError(f"{self.path}: not a results database, or damaged ({e}); move it "
                             "away and a new one is started") from None

    def _close_quietly(self) -> None:
        try:
            self._db.close()
        except (AttributeError, sqlite3.Error):
            pass

    def _init(self) -> None:
        db = self._db
        db.execute("PRAGMA busy_timeout = 10000")
        db.execute("PRAGMA foreign_keys = ON")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" in tables:
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA:
                raise StoreError(f"{self.path} was written by a newer iqk-studio (results schema "
                                 f"{version}; this version reads up to {SCHEMA})")
        elif tables:
            raise StoreError(f"{self.path} is an SQLite file but not an iqk-studio results store")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        with self._tx():
            for stmt in _DDL:
                db.execute(stmt)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA),))

    def _tx(self):
        store = self

        class _Tx:
            def __enter__(self):
                store._lock.acquire()
                store._db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, *_):
                try:
                    store._db.execute("ROLLBACK" if exc_type else "COMMIT")
                finally:
                    store._lock.release()

        return _Tx()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ writing
    def start_run(self, spec: RunSpec, status: str = "running") -> int:
        """A new run; returns its id."""
        cols = list(_SPEC_COLS) + ["command", "facts", "status", "created", "pid", "host"]
        vals = [getattr(spec, c) for c in _SPEC_COLS] + [
            json.dumps(list(spec.command)), json.dumps(spec.facts, default=str), status,
            time.time(), os.getpid(), _host()]
        with self._tx():
            cur = self._db.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES "
                                   f"({', '.join('?' * len(cols))})", vals)
            return int(cur.lastrowid)

    def update_run(self, run_id: int, **values) -> None:
        """Set columns (RunSpec fields, final_*, same_top, message, facts, summary)."""
        bad = set(values) - _UPDATABLE
        if bad:
            raise ValueError(f"not a run field: {sorted(bad)}")
        if not values:
            return
        enc = {k: (json.dumps(list(v)) if k == "command" else
                   json.dumps(v, default=str) if k in ("facts", "summary") else
                   _num(v) if k.startswith("final_") or k == "same_top" else v)
               for k, v in values.items()}
        with self._tx():
            self._db.execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in enc)} WHERE id = ?",
                             [*enc.values(), run_id])

    def add_chunk(self, run_id: int, row: ChunkRow) -> None:
        cols = ("idx",) + CHUNK_FIELDS
        vals = [row.index] + [_num(getattr(row, f)) for f in CHUNK_FIELDS]
        with self._tx():
            self._db.execute(f"INSERT OR REPLACE INTO chunks (run_id, {', '.join(cols)}) VALUES "
                             f"(?, {', '.join('?' * len(cols))})", [run_id, *vals])

    def add_group(self, run_id: int, g: GroupRow) -> None:
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO groups VALUES (?,?,?,?,?,?,?,?,?,?)",
                             (run_id, g.index, g.label, g.bytes_before, g.bytes_after,
                              _num(g.kld), _num(g.kld_err), _num(g.ln_ratio), _num(g.same_top),
                              _num(g.seconds)))

    def finish_run(self, run_id: int, status: str, message: str = "", **values) -> None:
        """Final status ("finished", "failed", "cancelled") and any final values."""
        self.update_run(run_id, message=message, **values)
        with self._tx():
            self._db.execute("UPDATE runs SET status = ?, finished = ? WHERE id = ?",
                             (status, time.time(), run_id))

    def rename_run(self, run_id: int, name: str) -> None:
        self._require(run_id)
        self.update_run(run_id, name=name)

    def delete_run(self, run_id: int) -> None:
        self._require(run_id)
        with self._tx():
            self._db.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    def add_imported(self, log, name: str = "", source_path: str | None = None) -> int:
        """Store an external.logimport.ImportedLog; returns the new run's id."""
        from iqk_studio.results.imported import import_rows, imported_spec

        spec = imported_spec(log, name, source_path)
        run_id = self.start_run(spec, status="imported")
        for row in import_rows(log):
            self.add_chunk(run_id, row)
        fin = log.final or (math.nan, math.nan)
        kld = log.kld or {}
        self.finish_run(run_id, "imported", final_ppl=fin[0], final_ppl_err=fin[1],
                        final_kld=kld.get("kld"), final_kld_err=kld.get("kld_err"),
                        same_top=kld.get("same_top"),
                        summary={k: v for k, v in kld.items() if k != "chunks"})
        return run_id

    def put_costs(self, key: CostKey, rows) -> None:
        """Store optimizer measurements (one transaction); a value given as nan keeps the one
        already stored (a KLD and an error measured at different times merge)."""
        k = [getattr(key, f) for f in _COST_KEY]
        sets = ", ".join(f"{v} = COALESCE(excluded.{v}, {v})" for v in _COST_VALUES)
        with self._tx():
            for r in rows:
                self._db.execute(
                    f"INSERT INTO costs VALUES ({', '.join('?' * 15)}) ON CONFLICT DO UPDATE SET "
                    f"{sets}, bytes = excluded.bytes, seconds = COALESCE(excluded.seconds, "
                    "seconds), created = excluded.created",
                    [*k, r.group, r.type, _num(r.kld), _num(r.kld_err), _num(r.ln_ratio),
                     _num(r.err), int(r.bytes), _num(r.seconds), time.time()])

    def get_costs(self, key: CostKey) -> list[CostRow]:
        """Every measurement stored under key."""
        where = " AND ".join(f"{f} = ?" for f in _COST_KEY)
        with self._lock:
            rows = self._db.execute(
                "SELECT grp, type, kld, kld_err, ln_ratio, err, bytes, seconds FROM costs WHERE "
                + where + " ORDER BY grp, type", [getattr(key, f) for f in _COST_KEY]).fetchall()
        return [CostRow(g, t, *(_nan(v) for v in r[:4]), int(r[4] or 0), _nan(r[5]))
                for g, t, *r in rows]

    def cost_keys(self, model_id: str) -> list[tuple[CostKey, int, float]]:
        """The measurement sets of a model: (key, rows with a KLD, newest time), most first."""
        cols = ", ".join(_COST_KEY)
        with self._lock:
            rows = self._db.execute(
                f"SELECT {cols}, SUM(kld IS NOT NULL), MAX(created) FROM costs WHERE model_id = ? "
                f"GROUP BY {cols} ORDER BY 7 DESC, 8 DESC", (model_id,)).fetchall()
        return [(CostKey(*r[:6]), int(r[6] or 0), float(r[7] or 0)) for r in rows]

    # ------------------------------------------------------------------ reading
    def list_runs(self, kind: str | None = None, source: str | None = None,
                  status: str | None = None, model_id: str | None = None,
                  search: str | None = None, limit: int | None = None) -> list[RunSummary]:
        """Runs, newest first; `search` matches the name, model path/name and recipe text."""
        where, args = [], []
        for col, v in (("kind", kind), ("source", source), ("model_id", model_id)):
            if v is not None:
                where.append(f"{col} = ?")
                args.append(v)
        if search:
            where.append("(name LIKE ? OR model_path LIKE ? OR model_name LIKE ? OR recipe LIKE ?)")
            args += [f"%{search}%"] * 4
        sql = ("SELECT runs.*, (SELECT COUNT(*) FROM chunks WHERE run_id = runs.id) + (SELECT "
               "COUNT(*) FROM groups WHERE run_id = runs.id) AS n_done FROM runs")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC" + (f" LIMIT {int(limit)}" if limit else "")
        with self._lock:
            cur = self._db.execute(sql, args)
            names = [d[0] for d in cur.description]
            rows = [self._summary(dict(zip(names, r))) for r in cur.fetchall()]
        return [r for r in rows if status is None or r.status == status]

    def get_run(self, run_id: int) -> Run:
        """The run with its chunks and groups; StoreError when there is no such run."""
        with self._lock:
            cur = self._db.execute("SELECT runs.*, 0 AS n_done FROM runs WHERE id = ?", (run_id,))
            row = cur.fetchone()
            if row is None:
                raise StoreError(f"no run {run_id} in {self.path}")
            info = dict(zip([d[0] for d in cur.description], row))
            cols = ", ".join(("idx",) + CHUNK_FIELDS)
            chunks = tuple(ChunkRow(r[0], *(_nan(v) for v in r[1:])) for r in self._db.execute(
                f"SELECT {cols} FROM chunks WHERE run_id = ? ORDER BY idx", (run_id,)))
            groups = tuple(GroupRow(r[1], r[2], r[3], r[4], *(_nan(v) for v in r[5:]))
                           for r in self._db.execute(
                               "SELECT * FROM groups WHERE run_id = ? ORDER BY idx", (run_id,)))
        info["n_done"] = len(chunks) + len(groups)
        return Run(self._summary(info), chunks, groups)

    def _require(self, run_id: int) -> None:
        with self._lock:
            if self._db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise StoreError(f"no run {run_id} in {self.path}")

    @staticmethod
    def _summary(d: dict) -> RunSummary:
        status = d["status"]
        if status == "running" and not _alive(d.get("pid"), d.get("host")):
            status = "interrupted"
        return RunSummary(
            d["id"], d["kind"], d["source"], status, d["name"], d["created"], d["finished"],
            d["model_path"], d["model_name"], d["model_id"], d["base_model_path"],
            d["base_model_id"], d["recipe"], d["plan_bytes"], d["plan_bpw"], d["text_path"],
            d["text_id"], d["n_ctx"], d["chunks"], d["n_done"], d["kv_type"], d["engine"],
            d["engine_version"], tuple(json.loads(d["command"] or "[]")), _nan(d["final_ppl"]),
            _nan(d["final_ppl_err"]), _nan(d["final_kld"]), _nan(d["final_kld_err"]),
            _nan(d["same_top"]), d["message"], json.loads(d["facts"] or "{}"),
            json.loads(d["summary"] or "{}"))


def _host() -> str:
    import socket

    return socket.gethostname()


def _alive(pid, host) -> bool:
    """Whether the process that records a running run is still there (same machine only)."""
    if not pid or host != _host() or os.name == "nt":
        return True  # another machine's run (or no cheap check): cannot tell
    if pid == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def open_store(path=None) -> ResultsStore:
    """The store at `path`, default: default_path() ($IQK_STUDIO_DATA or the user data folder)."""
    return ResultsStore(path)
