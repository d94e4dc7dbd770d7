"""The batch manifest: which items are done, from which input bytes, with which outputs.

A batch output folder ``OUT`` holds ``OUT/manifest.jsonl``: one JSON object per
line, appended (and flushed to disk) by the driver *after* an item's outputs
are in place. Each record has

``key``
    the item's id (input path relative to the input root, without suffix; for
    frames of a Zarr stack ``<stem>.zarr/t000012``),
``input``, ``frame``
    the input path and frame index (``null`` for whole files),
``checksum``
    ``sha256:<hex>`` of the input file's bytes, or of a Zarr frame's decoded
    data (dtype, shape and C-order bytes),
``status``
    ``"done"`` or ``"failed"``,
``outputs``
    ``{kind: path relative to OUT}`` (``labels``, ``objects``, ``counts``, ``tracks`` ...),
``reason``
    why a failed item failed (one line),
``settings``
    the hash of the run settings the item was made with,
``seconds``, ``worker``, ``time``
    processing time, worker address/pid, UTC time of the record.

The last record of a key wins. A line cut short by a crash is ignored when
reading. Only the driver process writes the manifest, so appends never
interleave.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

MANIFEST_NAME = "manifest.jsonl"
FAILURES_NAME = "failures.csv"
CONFIG_NAME = "batch_config.json"
RUN_NAME = "batch_run.json"  # what the last run did: counts, seconds, tables
LOCK_NAME = ".batch.lock"

#: columns of ``failures.csv``
FAILURE_COLUMNS = ["key", "input", "frame", "reason", "time"]


def sha256_file(path: str | os.PathLike, block_size: int = 1 << 20) -> str:
    """``sha256:<hex>`` of a file's bytes (read in blocks of ``block_size`` bytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(block_size)
            if not block:
                break
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def sha256_tree(path: str | os.PathLike, block_size: int = 1 << 20) -> str:
    """``sha256:<hex>`` over the relative names and bytes of all files under a folder (e.g. a Zarr store)."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(root)).encode("utf-8") + b"\0")
        with open(file, "rb") as fh:
            while True:
                block = fh.read(block_size)
                if not block:
                    break
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def sha256_array(array: Any) -> str:
    """``sha256:<hex>`` of an array's dtype, shape and C-order bytes (decoded data, not the compressed chunks)."""
    arr = np.ascontiguousarray(np.asarray(array))
    digest = hashlib.sha256()
    digest.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    digest.update(memoryview(arr).cast("B"))
    return "sha256:" + digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """``sha256:<hex>`` of an object's canonical JSON (sorted keys); used for the settings hash."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def utc_now() -> str:
    """Current UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


class Manifest:
    """Append-only JSON-lines record of finished (done or failed) batch items.

    Parameters
    ----------
    path : the ``manifest.jsonl`` file; its folder is created on the first append.
    fsync : flush each appended line to disk (``os.fsync``) so that a power
        loss does not lose records of outputs that are already on disk.
    """

    def __init__(self, path: str | os.PathLike, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self._fh = None

    def load(self) -> dict[str, dict]:
        """Latest record per key (empty when the file does not exist); damaged lines are skipped."""
        records: dict[str, dict] = {}
        if not self.path.exists():
            return records
        with open(self.path, "r", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                if isinstance(rec, dict) and "key" in rec:
                    records[str(rec["key"])] = rec
        return records

    def append(self, record: dict) -> None:
        """Append one record as a single line (one ``write`` call), flushed to disk."""
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
            # a previous run killed mid-write may have left a line without its newline
            if self._fh.tell() > 0:
                with open(self.path, "rb") as check:
                    check.seek(-1, os.SEEK_END)
                    if check.read(1) != b"\n":
                        self._fh.write("\n")
        record = dict(record)
        record.setdefault("time", utc_now())
        self._fh.write(json.dumps(record, default=str) + "\n")
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def is_done(record: dict | None, out: str | os.PathLike, settings_hash: str | None = None) -> bool:
    """True when ``record`` says done (with ``settings_hash`` when given) and all its outputs exist under ``out``."""
    if not record or record.get("status") != "done":
        return False
    if settings_hash is not None and record.get("settings") != settings_hash:
        return False
    out = Path(out)
    return all((out / rel).exists() for rel in (record.get("outputs") or {}).values())


def failures_table(records: Iterable[dict]) -> pd.DataFrame:
    """``failures.csv`` table (``key, input, frame, reason, time``) from failed records."""
    rows = [{c: rec.get(c) for c in FAILURE_COLUMNS} for rec in records]
    return pd.DataFrame(rows, columns=FAILURE_COLUMNS)


def write_failures_csv(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    """Write ``failures.csv`` atomically (a header only when nothing failed)."""
    from ..io.tables import write_csv

    return write_csv(path, failures_table(records))
