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


#: the run records of the commands whose ``--out`` folders hold tables of their own (``counts.csv``, ``objects.csv``,
#: ``tracks.csv``: one command's replaced by another's under ``--overwrite`` was that run's result lost), with whose
#: they are (a ``params.json`` not of a simulation is autolabel's: :func:`describe_run_record`)
RUN_RECORDS = {"segment_run.json": "a segmentation's (microseg segment)",
               "track_config.json": "a tracking's (microseg track)",
               "params.json": "a simulation's ground truth (microseg simulate)",
               "batch_run.json": "a batch run's (microseg batch)",
               "classify_run.json": "a classification's (microseg classify)"}


def describe_run_record(out: Path, record_name: str) -> str:
    """Whose run the record ``out/record_name`` (a name of :data:`RUN_RECORDS`) is, in words."""
    from ..tracking.export import is_simulation_folder

    if record_name == "params.json" and not is_simulation_folder(out):
        return "another command's (microseg autolabel?)"
    return RUN_RECORDS.get(record_name, f"another command's ({record_name})")


def newer_run_record(out: Path, own: str, others) -> str | None:
    """Of the run records ``others`` in ``out`` (names :func:`earlier_run_record` reads), the newest one
    written at or after the record ``own`` (or any, when ``out`` holds no ``own``), else None.

    The tables a folder holds are the last run's that wrote them: a command that wrote its tables there
    before (``own``) and another whose run came after (e.g. ``microseg track``, then ``microseg segment
    --overwrite``: its counts.csv replaced track's) leave the folder's tables to the later one, whose record
    is the newer (modification times, nanoseconds; a tie counts as the other's, the folder kept). A folder
    copied without its times (``cp -r``) may be taken as another run's: refused, never replaced."""

    def written(name: str) -> int | None:
        if earlier_run_record(out, name) is None:
            return None
        try:
            return (out / name).stat().st_mtime_ns
        except OSError:
            return None

    own_time = written(own)
    newest = None
    for name in others:
        time = written(name)
        if time is not None and (own_time is None or time >= own_time) and (newest is None or time > newest[0]):
            newest = (time, name)
    return newest[1] if newest else None


def refuse_another_runs_outputs(out: Path, existing: list[str], own: str, command: str) -> None:
    """InputError when ``existing`` (names of the outputs this ``command`` run would write that ``out``
    holds) are another command's run's: its record (:data:`RUN_RECORDS`) is newer than this command's
    own record ``own`` (or there is none of it; :func:`newer_run_record`). ``--overwrite`` replaces only
    an earlier run of the same command's files (not "use --overwrite": it would replace another run's
    result, a simulation's truth)."""
    from ..errors import InputError

    if not existing:
        return
    record = newer_run_record(out, own, [name for name in RUN_RECORDS if name != own])
    if record is None:
        return
    shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
    after = f", written after the earlier {command} run's {own}" if earlier_run_record(out, own) is not None else ""
    raise InputError(f"{out} holds {shown} of another run: {describe_run_record(out, record)} ({record}{after}); "
                     f"--overwrite replaces an earlier {command} run's files only: choose another --out")
