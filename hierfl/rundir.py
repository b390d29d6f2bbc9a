"""Run folders: one writer at a time, checked before round 1, old outputs cleared on --force.

``hierfl run`` claims its ``--out`` folder before anything is simulated: it creates the
folder, takes an exclusive lock (``.hierfl.lock``, an ``flock`` the system drops when the
process dies, even by SIGKILL), removes temporary files a killed writer left behind, and
refuses a folder that holds anything else unless ``--force``, which first removes every
file a run writes (``KNOWN_OUTPUTS``). A second run into the same folder is refused at
once with one line; so is a folder that cannot be created or written.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from hierfl.checkpoint import CHECKPOINT
from hierfl.errors import HierflError, OutputError
from hierfl.results import RUN_FILES, TEMP_SUFFIX, atomic_write

EXPORTS = ("model.onnx", "model.onnx.json", "model.int8.onnx", "model.int8.onnx.json")
"""What ``hierfl export`` writes into a run folder by default: it exports the old model."""
TIER_EXPORTS = ("model.w*.onnx", "model.w*.onnx.json")
"""The same for a HeteroFL variant (``hierfl export --width``), by name pattern."""
LOCK = ".hierfl.lock"
OPTIONS = ".hierfl-run.json"
"""What the command asked to write (plots, trace.json), for ``--resume`` to do the same."""
KNOWN_OUTPUTS = (
    *RUN_FILES,
    "model.pt",
    *EXPORTS,
    "trace.json",
    "timeline.png",
    "accuracy.png",
    "energy.png",
    "links.png",
    "links.csv",
    "link_load.parquet",
    "evaluations.csv",
    "error.txt",
    CHECKPOINT,
    OPTIONS,
)


@contextmanager
def claim(folder: Path, force: bool = False, resume: bool = False) -> Iterator[None]:
    """Hold ``folder`` for one run; if the run fails, remove the folder again when this run
    made it and wrote nothing there yet (a run refused before round 1 leaves no folder)."""
    top = _make(folder)
    try:
        handle = _lock(folder)
    except HierflError:
        _remove_if_bare(folder, top)
        raise
    try:
        _clear(folder, force, resume)
        yield
    except BaseException:  # an error or an interrupt before any round leaves no folder
        _remove_if_bare(folder, top)
        raise
    finally:
        (folder / LOCK).unlink(missing_ok=True)  # before unlocking: see _lock
        os.close(handle)


def _make(folder: Path) -> Path | None:
    """Create ``folder`` and its missing parents; the topmost folder created, or None."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--out {folder}: is a file, not a folder")
    top = next((p for p in reversed([folder, *folder.parents]) if not p.exists()), None)
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        if not folder.is_dir():
            raise OutputError(f"--out {folder}: is a file, not a folder") from None
        return None
    except NotADirectoryError:
        raise OutputError(f"--out {folder}: a folder above it is a file") from None
    except OSError as error:
        raise OutputError(f"--out {folder}: cannot create it: {error.strerror}") from None
    return top


def _lock(folder: Path) -> int:
    """Open and ``flock`` the folder's lock file without waiting; the file descriptor."""
    path = folder / LOCK
    for _ in range(3):
        try:
            handle = _open_lock(path)
        except OSError as error:
            raise OutputError(f"--out {folder}: cannot write into it: {error.strerror}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise OutputError(
                f"--out {folder}: another hierfl run is writing into it (it holds {LOCK})"
            ) from None
        if _same_file(handle, path):
            return handle
        os.close(handle)  # its holder removed it between our open and lock: take a new one
    raise OutputError(f"--out {folder}: another hierfl run is writing into it (it holds {LOCK})")


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _same_file(handle: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle), path.stat())
    except FileNotFoundError:
        return False


def _clear(folder: Path, force: bool, resume: bool) -> None:
    """Remove stale temporary files; refuse other files, or remove the known ones on --force."""
    for temp in folder.glob(f".*{TEMP_SUFFIX}"):
        temp.unlink(missing_ok=True)
    if resume:
        return
    others = sorted(p.name for p in folder.iterdir() if p.name not in (LOCK, OPTIONS))
    if others and CHECKPOINT in others and not force:
        raise HierflError(
            f"--out {folder}: holds an unfinished run (hierfl run --resume {folder} finishes "
            "it; --force starts over)"
        )
    if others and not force:
        raise HierflError(f"--out {folder}: folder is not empty (use --force to write into it)")
    tiers = [path.name for pattern in TIER_EXPORTS for path in folder.glob(pattern)]
    for name in (*KNOWN_OUTPUTS, *tiers):
        path = folder / name
        if path.is_file():
            try:
                path.unlink()
            except OSError as error:
                raise OutputError(f"--force: cannot remove {path}: {error.strerror}") from None


def _remove_if_bare(folder: Path, top: Path | None) -> None:
    """Remove the folders this run created (``folder`` up to ``top``) if they hold nothing
    but hierfl's own bookkeeping."""
    if top is None or any(p.name not in (LOCK, OPTIONS) for p in folder.iterdir()):
        return  # a checkpoint or an output is there: keep it, and what --resume needs
    for name in (OPTIONS, LOCK):
        (folder / name).unlink(missing_ok=True)
    for made in [folder, *folder.parents]:
        with suppress(OSError):
            made.rmdir()
        if made == top:
            return


def save_options(folder: Path, options: dict[str, bool | None], overrides: list[str]) -> None:
    """Record what the command asked to write, and its overrides, for a later ``--resume``."""
    text = json.dumps({**options, "overrides": overrides})
    atomic_write(folder / OPTIONS, lambda temp: Path(temp).write_text(text))


def _saved_options(folder: Path) -> dict:
    """The recorded options, or {} when the file is missing or not a JSON object."""
    try:
        saved = json.loads((folder / OPTIONS).read_text())
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def load_options(folder: Path, given: dict[str, bool | None]) -> dict[str, bool | None]:
    """``given`` where set, else what the original command asked for (None: its default),
    else True."""
    saved = _saved_options(folder)
    return {
        name: value if value is not None else saved.get(name, True)
        for name, value in given.items()
    }


def load_overrides(folder: Path) -> list[str]:
    """The original command's overrides (for titles); [] when none or not a list of strings."""
    overrides = _saved_options(folder).get("overrides", [])
    ok = isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)
    return overrides if ok else []


def finish(folder: Path) -> None:
    """Remove the checkpoint and the recorded options once every output is written."""
    for name in (CHECKPOINT, OPTIONS):
        (folder / name).unlink(missing_ok=True)
