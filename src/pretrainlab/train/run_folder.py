"""The run folder is the run: what may start in it, what a resume continues, what killed writers left behind.

A new run starts only in a folder that does not exist yet or is empty: a finished or stopped run is never
overwritten or mixed into, even when its checkpoints/ was removed. The folder given to a resume is the one
trained, wherever the run was created (config.yaml's `out` records only where that was).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Any

import yaml

from pretrainlab.atomic import atomic_path, check_output_path, check_writable
from pretrainlab.config import build_config, config_to_dict
from pretrainlab.errors import PretrainlabError
from pretrainlab.train.config import RunConfig, TrainConfig

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


def saved_run_config(run_dir: Path) -> RunConfig:
    """The run configuration in `run_dir/config.yaml`; a damaged file is a one-line error, never a traceback."""
    path = run_dir / "config.yaml"
    try:
        values = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as error:
        problem = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PretrainlabError(f"--resume: {path} is not readable YAML ({problem}); restore it from a copy of the "
                               "run or start a new run with another --out") from None
    if not isinstance(values, dict) or not isinstance(values.get("train", {}), dict) or "method" not in values:
        raise PretrainlabError(f"--resume: {path} is not a pretrainlab run configuration (expected a mapping with "
                               "method, backbone, data, train, ...); restore it from a copy of the run")
    values.pop("resolved", None)
    train = dict(values.get("train") or {})
    train.pop("stop_after", None)  # written by older versions; a per-invocation flag, never part of the run
    try:
        values["train"] = build_config(TrainConfig, train, "train")
        return build_config(RunConfig, values, "run")
    except PretrainlabError as error:
        raise PretrainlabError(f"--resume: {path} is not a usable run configuration ({error})") from None


def resume_config(run_dir: Path, overrides: dict[str, Any], train_overrides: dict[str, Any],
                  option_overrides: dict[str, Any]) -> RunConfig:
    """The saved configuration of `run_dir`; a flag given again must keep its saved value.

    The folder is the run: the configuration returned trains `run_dir`, whatever `out` config.yaml records
    (a copied or moved run folder resumes in place). `stop_after` is the one per-invocation setting: never
    saved, never compared, taken from `train_overrides` (default 0).
    """
    check_resume_folder(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise PretrainlabError(f"--resume: {run_dir} holds no config.yaml; start the run without --resume")
    saved = saved_run_config(run_dir)
    saved_values = config_to_dict(saved)
    given = {key: value for key, value in overrides.items() if value is not None and key != "out"}
    given.update({f"train.{k}": v for k, v in train_overrides.items() if v is not None and k != "stop_after"})
    given.update({f"method_options.{k}": v for k, v in option_overrides.items()})
    differences = []
    for key, value in given.items():
        current: Any = saved_values
        for part in key.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        if current != value and not (isinstance(current, list) and list(value) == current):
            differences.append(f"{key}: saved {current!r}, given {value!r}")
    if differences:
        raise PretrainlabError(f"--resume cannot change the run's settings ({'; '.join(differences)})")
    stop_after = train_overrides.get("stop_after") or 0
    return dataclasses.replace(saved, out=str(run_dir), train=dataclasses.replace(saved.train, stop_after=stop_after))


def write_config(run_dir: Path, config: RunConfig, resolved: dict[str, Any]) -> None:
    values = config_to_dict(config)
    values["train"].pop("stop_after", None)  # per invocation: a resume must not stop again at the same step
    values["resolved"] = resolved
    with atomic_path(run_dir / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(values, sort_keys=False))
