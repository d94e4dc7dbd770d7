"""Staging folders: a command writes its outputs into a hidden folder inside ``--out`` and moves them into
place at the end (with Ctrl-C and TERM held back), so that an interrupted run leaves the earlier results
whole, never half of each. A folder a killed run left is removed by the next run on the same machine."""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from pathlib import Path


def staging_prefix(command: str) -> str:
    """The name every staging folder of ``command`` (e.g. ``"track"``) starts with."""
    return f".microseg-{command}-"


def host() -> str:
    """This machine's name as it can stand in a folder name."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def make_staging_folder(out: Path, command: str) -> Path:
    """A new staging folder in ``out``, named with the command, this process's id and the host."""
    return Path(tempfile.mkdtemp(prefix=f"{staging_prefix(command)}{os.getpid()}-{host()}-", dir=out))


def remove_stale_staging(out: Path, command: str) -> None:
    """Remove staging folders of ``command`` that killed runs of this machine left in ``out`` (named with
    their process id and host); a running process's folder, or another machine's, is left alone."""
    from ..batch.runner import pid_alive

    prefix = staging_prefix(command)
    for folder in out.glob(f"{prefix}*"):
        pid, _, rest = folder.name[len(prefix):].partition("-")
        if not rest.startswith(f"{host()}-"):
            continue  # another machine's run (a shared folder): its own to clean up
        if pid.isdigit() and pid_alive(int(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)


def earlier_run_record(out: Path, record_name: str) -> dict | None:
    """The run record ``out/record_name`` (``segment_run.json``, ``classify_run.json``, ``track_config.json``,
    ``params.json``) an earlier run of napari-microseg left there, or None (none, unreadable, not a JSON
    object). A file an output of that run would have had the name of is removed as stale only when such a
    record says a run wrote in this folder: a user's own file of that name is left."""
    import json

    try:
        record = json.loads((out / record_name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
