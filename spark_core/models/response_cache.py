"""On-disk cache of every generator and judge call.

Keyed by (backend, model, full request, sampling parameters): a rerun or a resumed stage
never repeats a call that finished — the paid or slow unit of work is checkpointed as soon as
it returns. SQLite in WAL mode, safe across threads and processes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from spark_core.artifacts import canonical_hash


def request_key(backend: str, model: str, request: dict[str, Any], kind: str = "generate") -> str:
    return canonical_hash({"kind": kind, "backend": backend, "model": model, "request": request})


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT)")
        # money spent per scope (a stage and a model), read by the cost limit across reruns
        self._db.execute("CREATE TABLE IF NOT EXISTS spend (scope TEXT, usd REAL)")
        self._db.commit()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        blob = json.dumps(value, sort_keys=True)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?)", (key, blob))
            self._db.commit()

    def add_spend(self, scope: str, usd: float) -> None:
        with self._lock:
            self._db.execute("INSERT INTO spend VALUES (?, ?)", (scope, usd))
            self._db.commit()

    def spent(self, scope: str) -> float:
        with self._lock:
            row = self._db.execute("SELECT SUM(usd) FROM spend WHERE scope = ?", (scope,))
            return row.fetchone()[0] or 0.0

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
