"""Atomic file writing: write to a temporary file in the target folder, then rename.

A crash or a cancelled run never leaves a half-written result, and an existing
file is replaced only once the new one is complete. Results get the permissions
of any newly created file (``0o666`` / ``0o777`` less the umask), not the
owner-only mode of temporary files, so colleagues can read shared results.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import InputError

#: resolved paths of the files (and Zarr stores) the running command reads; see :func:`protect_inputs`
_PROTECTED_FILES: set[Path] = set()
_PROTECTED_STORES: set[Path] = set()
#: files inside an input folder that are inputs besides TIFF / FITS / Zarr
_OTHER_INPUTS = (".png", ".jpg", ".jpeg", ".npy")
#: output folders :func:`make_output_folder` created for the running command, parents first
_CREATED_FOLDERS: list[Path] = []


def protect_inputs(paths: Iterable[str | os.PathLike]) -> None:
    """Declare the inputs of the running command, so that no output replaces them.

    Each path may be a file, a folder (its image and array files, not its
    subfolders nor tables a previous run wrote there, are protected; a Zarr
    store is protected with everything inside it) or a glob
    pattern (``**`` included). Replaces any earlier declaration. Writers that go
    through :func:`atomic_path` or call :func:`guard_target` then refuse such
    a target, even with ``--overwrite``.
    """
    import glob

    from .images import image_kind

    files: set[Path] = set()
    stores: set[Path] = set()
    for raw in paths:
        text = os.fspath(raw)
        # a path that exists is itself, whatever characters it holds (plate[1]/ was read as a pattern
        # matching plate1/, and the real folder's images went unprotected: overwritten with --overwrite)
        matches = glob.glob(text, recursive=True) if glob.has_magic(text) and not os.path.lexists(text) else [text]
        for match in matches:
            path = Path(match)
            try:
                resolved = path.resolve()
                if path.is_file():
                    files.add(resolved)
                elif path.is_dir():
                    if image_kind(path) == "zarr":
                        stores.add(resolved)
                    else:
                        for q in path.iterdir():
                            if q.is_dir() and image_kind(q) == "zarr":
                                stores.add(q.resolve())
                            elif q.is_file() and (image_kind(q) is not None or q.suffix.lower() in _OTHER_INPUTS):
                                files.add(q.resolve())
            except (OSError, RuntimeError):  # unreadable, a link loop (RuntimeError): the command reports it
                continue
    _PROTECTED_FILES.clear()
    _PROTECTED_FILES.update(files)
    _PROTECTED_STORES.clear()
    _PROTECTED_STORES.update(stores)


def protect_more_inputs(files: Iterable[str | os.PathLike]) -> None:
    """Add files a command reads besides those :func:`protect_inputs` found in its input folders
    (tables, such as a tracks folder's ``tracks.csv``); missing ones are skipped."""
    _PROTECTED_FILES.update(Path(f).resolve() for f in files if Path(f).is_file())


def make_output_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) and check it can be written, before any work.

    Raises :class:`InputError` when it is a file or the user may not write there.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder")
    new = [p for p in reversed((folder, *folder.parents)) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _CREATED_FOLDERS.extend(p for p in new if p not in _CREATED_FOLDERS)
    except OSError as err:
        raise InputError(f"{folder}: cannot create the output folder ({err.strerror or err})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{folder}: no permission to write in this folder")
    return folder


def remove_empty_created_folders() -> None:
    """After a failed command: remove the output folders it created that are still empty.

    Only empty folders go (``rmdir``), deepest first, so nothing written is lost.
    """
    for folder in reversed(_CREATED_FOLDERS):
        with contextlib.suppress(OSError):
            folder.rmdir()
    _CREATED_FOLDERS.clear()


def forget_created_folders() -> None:
    """Start a command with no record of created folders (see :func:`remove_empty_created_folders`)."""
    _CREATED_FOLDERS.clear()


def refuse_folders_in_the_way(paths: Iterable[str | os.PathLike]) -> None:
    """InputError when an output file's name is taken by a folder (a Zarr store, ``.zarr``, is an output of
    its own): found only as it was written, after the work, the run then stopped with some outputs of its
    own beside the earlier run's and named its hidden staging folder."""
    for path in paths:
        path = Path(path)
        if path.is_dir() and path.suffix.lower() != ".zarr":
            raise InputError(f"{path} is a folder: this run writes a file of that name there (move or rename the "
                             "folder, or choose another --out)")


def guard_target(path: str | os.PathLike) -> None:
    """Raise :class:`InputError` if writing ``path`` would replace one of the declared inputs."""
    if not (_PROTECTED_FILES or _PROTECTED_STORES):
        return
    try:
        resolved = Path(path).resolve()
    except RuntimeError:  # Python 3.11 raises this, not OSError, for a loop of symbolic links
        raise InputError(f"{path}: a loop of symbolic links (a link that leads back to itself): nothing can be "
                         "written there") from None
    if resolved in _PROTECTED_FILES or resolved in _PROTECTED_STORES \
            or any(parent in _PROTECTED_STORES for parent in resolved.parents):
        raise InputError(f"{path}: is one of this command's inputs; it is never overwritten (choose another --out)")


def _umask() -> int:
    """The process umask, read without changing it where Linux tells it (else set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_permissions(path: str | os.PathLike) -> None:
    """Give a temporary file or folder (``mkstemp`` / ``mkdtemp``: owner-only) the mode a
    newly created one would have, before it is renamed into place."""
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


def temp_prefix(name: str) -> str:
    """The prefix of a hidden temporary file or folder beside an output named ``name``: ``.<name>.``, the
    name cut to 100 bytes (a legal 246-255 character name plus the random part and suffix passed the
    file system's 255-byte limit: "File name too long" for a name the user could write)."""
    return "." + name.encode("utf-8", "surrogateescape")[:100].decode("utf-8", "ignore") + "."


def _writable_through(linked: Path) -> bool:
    """Whether a link's target ``linked`` is written in place of the link: a file (or a new name) in a folder
    this process may write, and not a content-addressed store's object (git-annex / DataLad keep each content
    once, read-only, under ``.git/annex/objects``: every link to it expects it unchanged). Otherwise the link
    itself is replaced by the new file, as a file of that name would be."""
    if ".git/annex/objects" in linked.as_posix() or linked.is_dir():
        return False
    # read-only by its mode bits too (root may write any file: os.access said yes to a 0444 raw image)
    if linked.exists() and (not os.access(linked, os.W_OK) or not linked.stat().st_mode & 0o222):
        return False
    parent = linked.parent
    return parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    Parameters
    ----------
    path : target file path. Its parent folder is created if missing.
    suffix : suffix of the temporary file (defaults to the target's suffixes,
        so writers that pick a format from the extension keep working).

    On an exception the temporary file is removed and ``path`` is untouched. A ``path`` that is a
    symbolic link is written through: the file it leads to gets the new content (the link was
    replaced by a file of its own, the linked file left as it was). A file replaced keeps its mode
    (a 0640 file became 0644).
    Raises :class:`InputError` when ``path`` is a declared input (:func:`protect_inputs`), or a file
    write-protected by its mode (no write bit, e.g. 0444: a link to one is replaced, never written through).
    """
    target = Path(path)
    guard_target(target)
    replacing_link = False
    if target.is_symlink():
        try:
            linked = Path(os.path.realpath(target, strict=False))
        except (OSError, RuntimeError):  # a loop of links: named by guard_target where inputs are declared
            raise InputError(f"{path}: a loop of symbolic links (a link that leads back to itself): nothing can be "
                             "written there") from None
        if _writable_through(linked):
            target = linked
        else:  # the link itself is replaced by a new file: the mode a new file gets, not its target's
            replacing_link = True
    existing_mode = None
    with contextlib.suppress(OSError):
        if target.is_file() and not replacing_link:
            existing_mode = stat.S_IMODE(target.stat().st_mode)
    # write-protected (a raw image made read-only, 0444): its folder's write permission let a rename replace it
    protected = None if replacing_link else write_protected_reason(target)
    if protected:
        raise InputError(protected)
    if target.is_dir():
        raise InputError(f"{target}: is a folder; give the name of a file to write")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # ("File exists: r6/afile" said nothing of which, or why)
        blocking = next((p for p in [target.parent, *target.parent.parents] if p.exists() and not p.is_dir()), None)
        raise InputError(f"cannot write {target}: {blocking or target.parent} is a file, not a folder") from None
    if suffix is None:
        suffix = "".join(target.suffixes) or ".tmp"
    tmp_name = None
    try:  # the temporary file's creation inside: a Ctrl-C just after it left an empty hidden file behind
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(target.stem), suffix=suffix, dir=target.parent)
        except OSError as err:  # a folder that takes no files (/proc, read-only): named as the target, not its temp file
            raise InputError(f"cannot write {target}: {err.strerror or err}") from None
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        if tmp.exists():
            if existing_mode is not None and tmp.is_file():
                os.chmod(tmp, existing_mode)  # the file replaced keeps its mode
            else:
                publish_permissions(tmp)
        os.replace(tmp, target)
    except BaseException:
        if tmp_name is not None:
            with contextlib.suppress(FileNotFoundError):
                Path(tmp_name).unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def replace_tree(new: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Move the folder ``new`` (a Zarr store written beside ``target``, on the same file system) to
    ``target``, replacing the folder there: the old one is renamed aside, the new one moved in (two renames,
    with Ctrl-C and TERM held back), and only then is the old one deleted. Deleting the old store first
    (thousands of chunk files) left, when interrupted, a store that no longer opens and no new one. An old
    store left aside by an interrupt during its deletion is removed by the next replacement."""
    import glob
    import shutil

    from ..cli._signals import interrupts_deferred

    new, target = Path(new), Path(target)
    for left in target.parent.glob(glob.escape(temp_prefix(target.name) + "old-") + "*"):  # an earlier replacement interrupted while deleting
        shutil.rmtree(left, ignore_errors=True)
    aside = None
    with interrupts_deferred():
        if target.exists():
            aside = Path(tempfile.mkdtemp(prefix=temp_prefix(target.name) + "old-", dir=target.parent)) / "store"
            os.replace(target, aside)
        os.replace(new, target)
    if aside is not None:
        shutil.rmtree(aside.parent, ignore_errors=True)
    return target


def write_protected_reason(path: str | os.PathLike) -> str | None:
    """Why :func:`atomic_path` (or a run publishing its outputs) would not replace the file ``path``: it is
    write-protected by its mode (no write bit, e.g. 0444), said as atomic_path says it; None otherwise (no
    file there, a writable one, or a link, which is replaced or written through)."""
    target = Path(path)
    try:
        if target.is_symlink() or not target.is_file():
            return None
        mode = stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return None
    if mode & 0o222:
        return None
    return (f"{target}: is write-protected (mode {mode:04o}), so it is not replaced; make it writable "
            "(chmod u+w) to replace it, or choose another name")


def unwritable_reason(path: Path) -> str | None:
    """Why a result file cannot be written at ``path`` (checked before long work starts), or None."""
    if path.is_dir():
        return f"{path} is a folder: give a file name such as {path / 'model.pt'}"
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the first existing ancestor must let us create the rest
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot write {path}: {folder} is not a writable folder"
    if folder == path.parent:  # try it: os.access says yes to root on a read-only mount or /proc
        try:
            tempfile.NamedTemporaryFile(dir=folder, prefix=".microseg-write-test-").close()  # made and removed
        except OSError as err:
            return f"cannot write {path}: {err.strerror or err}"
    return None
