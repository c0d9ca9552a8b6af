"""The run folder is the run: what may start in it, what a resume continues, what killed writers left behind.

A new run starts only in a folder that does not exist yet or is empty: a finished or stopped run is never
overwritten or mixed into, even when its checkpoints/ was removed. The folder given to a resume is the one
trained, wherever the run was created (config.yaml's `out` records only where that was).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from pretrainlab.errors import PretrainlabError

log = logging.getLogger(__name__)

# atomic_path writes `.NAME.PID.tmp` beside its target; a kill between write and rename leaves one behind.
TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")
TEMPORARY_FOLDERS = (".", "checkpoints")


def stale_temporaries(run_dir: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes (not this process's own) in the run folder and checkpoints/."""
    found = []
    for folder in TEMPORARY_FOLDERS:
        directory = Path(run_dir) / folder
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            match = TEMPORARY_NAME.match(path.name)
            if match and int(match["pid"]) != os.getpid() and path.is_file():
                found.append(path)
    return sorted(found)


def remove_stale_temporaries(run_dir: Path) -> int:
    """Deletes what killed checkpoint or config writes left (`.last.pt.PID.tmp`); returns how many."""
    stale = stale_temporaries(run_dir)
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temporary files left by interrupted writes in %s", len(stale), run_dir)
    return len(stale)


def check_writable(folder: Path, flag: str = "--out") -> None:
    """Creates and deletes a file in `folder`: the only test that holds for root, read-only mounts and /sys."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise PretrainlabError(f"{flag}: cannot write into {folder} ({error.strerror or error}); "
                               f"choose a {flag} in a folder you can write to") from None


def nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_output_path(path: Path, flag: str, want_folder: bool) -> None:
    """`path` can be created or replaced: it is not the wrong kind of thing, not under a file, and writable."""
    path = Path(path)
    if path.exists() and path.is_dir() != want_folder:
        kind, wanted = ("a folder", "a file path") if path.is_dir() else ("a file", "a folder path")
        raise PretrainlabError(f"{flag} {path} is {kind}; give {wanted}")
    parent = nearest_existing(path if want_folder else path.parent)
    if not parent.is_dir():
        raise PretrainlabError(f"{flag} {path} lies under the file {parent}; choose a path under a folder")
    check_writable(parent, flag)


def check_new_run_folder(run_dir: Path) -> None:
    """A new run needs a folder that does not exist or is empty (stale temporaries aside, which are removed)."""
    run_dir = Path(run_dir)
    check_output_path(run_dir, "--out", want_folder=True)
    if not run_dir.is_dir():
        return
    stale = set(stale_temporaries(run_dir))
    held = sorted(path.name for path in run_dir.iterdir()
                  if path not in stale and not (path.name == "checkpoints" and path.is_dir()
                                                and not set(path.iterdir()) - stale))
    if held:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise PretrainlabError(f"{run_dir} already holds a run ({shown}); add --resume to continue it, or choose a "
                               "new --out (a run folder is never overwritten)")
    remove_stale_temporaries(run_dir)


def check_resume_folder(run_dir: Path) -> None:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PretrainlabError(f"--resume: no run folder at {run_dir} (no config.yaml there); give the folder of a "
                               "stopped run as --out")
    check_writable(run_dir)
