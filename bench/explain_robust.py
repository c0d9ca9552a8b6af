"""Robust vs standard backbones, explained (issue 12 part 6): attribution quality of the robustness study's
backbones, the question of "How explainable are adversarially-robust CNNs?" (Nourelahi et al., arXiv 2205.13042).

    python -m bench.explain_robust --measure [--only simclr-fm,...]   # cam + attribution, scored
    python -m bench.explain_robust --render                           # the robust table in docs/explain.md

Backbones: tinycnn on Fashion-MNIST from bench/robustness_study.sh (SimCLR, the SimCLR backbone after PGD and
after TRADES adversarial fine-tuning, supervised; `--study DIR`, default ../attack/runs/study) and the fair random
init of seed 0. Each is linked into runs/explain-study/robust/NAME: only its weights, classifier and config.yaml
are symlinked, so explain's figures and records land in this repository's runs/, never in the study's folders.
Data: `composed:` canvases of Fashion-MNIST garments (the backbones' own data), scored as bench/explain_study.py
scores the digits study (QUALITY there: 400 training canvases for the probe, 12 test canvases explained).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from bench.common import shared_data
from bench.explain_study import QUALITY, RESULTS, measure, quality_table, random_run

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "explain-study" / "robust"
PAGE = ROOT / "docs" / "explain.md"
STUDY = ROOT.parent / "attack" / "runs" / "study"
FASHION = shared_data("fashion_mnist.npz")
ROBUST = {"random": "random-tinycnn", "SimCLR": "simclr-fm", "SimCLR + PGD-AT": "simclr-fm-adv-pgd",
          "SimCLR + TRADES": "simclr-fm-adv-trades", "supervised": "supervised-fm"}
LINKED = ("backbone.safetensors", "classifier.safetensors", "config.yaml")


def link_files(source: Path, folder: Path) -> None:
    """Links `source`'s weights, head and config into `folder` (read-only use; files already linked are kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    for file_name in LINKED:
        link = folder / file_name
        if (source / file_name).exists() and not link.is_symlink():
            link.symlink_to((source / file_name).resolve())


def linked_run(name: str, study: Path) -> Path:
    """runs/explain-study/robust/NAME: the study run's files as read-only links, or a random init of seed 0."""
    if name == "random-tinycnn":
        return random_run("tinycnn", RUNS)
    source = study / name
    if not (source / "backbone.safetensors").exists():
        raise SystemExit(f"{source} has no backbone.safetensors: run bench/robustness_study.sh first (or --study)")
    link_files(source, RUNS / name)
    return RUNS / name


def render() -> None:
    text = PAGE.read_text()
    table = quality_table("robust", ROBUST)
    PAGE.write_text(re.sub(r"<!-- robust -->.*?<!-- /robust -->", f"<!-- robust -->\n{table}\n<!-- /robust -->", text,
                           flags=re.DOTALL))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true")
    parser.add_argument("--only", help="comma list of run names (e.g. simclr-fm,random-tinycnn)")
    parser.add_argument("--study", type=Path, default=STUDY, help="the robustness study's runs")
    parser.add_argument("--render", action="store_true")
    args = parser.parse_args()
    if args.measure:
        data = f"composed:npz:{FASHION}:{QUALITY['probe_images']}"
        for label, name in ROBUST.items():
            if args.only and name not in args.only.split(","):
                continue
            measure("robust", label, linked_run(name, args.study), ["cam", "attribution"], data, QUALITY["images"],
                    QUALITY["probe_images"], QUALITY["options"])
    if args.render:
        render()
    print(f"results in {RESULTS}")


if __name__ == "__main__":
    main()
