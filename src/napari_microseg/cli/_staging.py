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
               "classify_run.json": "a classification's (microseg classify)",
               "demo_report.json": "a demo's (microseg demo)",
               ".microseg_demo": "a demo's (microseg demo, stopped before its report)"}

#: records that are marks, not JSON: the demo writes ``.microseg_demo`` first, its report last
_MARK_RECORDS = (".microseg_demo",)


def _owned_by(out: Path, record_name: str):
    """A test of a path relative to ``--out`` (``labels/x.tif``): whether the command whose run record is
    ``record_name`` writes a file there (the files a later run of that command left are its, not the
    files other commands wrote beside them)."""
    if record_name == "segment_run.json":
        first = {"objects.csv", "counts.csv", "clusters.csv", "segment_run.json", "labels", "probabilities",
                 "defect_masks"}
        return lambda rel: Path(rel).parts[0] in first
    if record_name == "track_config.json":
        from .track import OUTPUT_NAMES

        return lambda rel: Path(rel).parts[0] in OUTPUT_NAMES
    if record_name == "classify_run.json":
        from .classify import OUTPUTS, SCORED_OUTPUTS

        names = {name for table in (OUTPUTS, SCORED_OUTPUTS) for names in table.values() for name in names}
        return lambda rel: Path(rel).parts[0] in names
    if record_name in ("demo_report.json", ".microseg_demo"):
        from ..demo import DEMO_FILES

        return lambda rel: Path(rel).parts[0] in DEMO_FILES
    from ..tracking.export import is_simulation_folder

    if record_name == "params.json" and is_simulation_folder(out):  # a simulation's truth: its files, samples, movies
        from .simulate import _SAMPLE_NAME, _SIMULATION_FILES

        top = {name for names in _SIMULATION_FILES.values() for name in names} | {"params.json"}
        movie = re.compile(r"movie_\d+")

        def simulated(rel: str) -> bool:
            parts = Path(rel).parts
            return parts[0] in top or bool(movie.fullmatch(parts[0])) or bool(_SAMPLE_NAME.fullmatch(parts[-1]))
        return simulated
    return lambda rel: True  # a batch run's folder, autolabel's (params.json), a record not known here: all of it


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

    newer = newer_run_records(out, own, others)
    return newer[0] if newer else None


def newer_run_records(out: Path, own: str, others) -> list[str]:
    """Of the run records ``others`` in ``out``, those written at or after the record ``own`` (all of
    them, when ``out`` holds no ``own``), newest first (see :func:`newer_run_record`)."""

    def written(name: str) -> int | None:
        if (not (out / name).is_file()) if name in _MARK_RECORDS else earlier_run_record(out, name) is None:
            return None
        try:
            return (out / name).stat().st_mtime_ns
        except OSError:
            return None

    own_time = written(own)
    found = []
    for name in others:
        time = written(name)
        if time is not None and (own_time is None or time >= own_time):
            found.append((time, name))
    return [name for _, name in sorted(found, reverse=True)]


def refuse_another_runs_outputs(out: Path, existing: list[str], own: str, command: str) -> None:
    """InputError when ``existing`` (names of the outputs this ``command`` run would write that ``out``
    holds) are another command's run's: its record (:data:`RUN_RECORDS`) is newer than this command's
    own record ``own`` (or there is none of it; :func:`newer_run_record`). ``--overwrite`` replaces only
    an earlier run of the same command's files (not "use --overwrite": it would replace another run's
    result, a simulation's truth)."""
    from ..errors import InputError

    if not existing:
        return
    for record in newer_run_records(out, own, [name for name in RUN_RECORDS if name != own]):
        # only the files that run's command writes are its (this command's own record and files beside them,
        # which that run left, are not)
        owned = _owned_by(out, record)
        theirs = [name for name in existing if Path(name).parts and Path(name).name != own and owned(name)]
        if theirs:
            break
    else:
        return
    existing = theirs
    shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
    after = f", written after the earlier {command} run's {own}" if earlier_run_record(out, own) is not None else ""
    raise InputError(f"{out} holds {shown} of another run: {describe_run_record(out, record)} ({record}{after}); "
                     f"--overwrite replaces an earlier {command} run's files only: choose another --out")
