"""Seconds per image of every explain analysis, on tinycnn and resnet18 at 32 px.

    flock /tmp/pretrainlab-bench.lock python -m bench.explain_speed [--backbones tinycnn,resnet18] [--images 8]
                                                                    [--repeats 3]

Data: CIFAR-10 (JPEG q75) from ../shared/data when present (a 500-image class-balanced training subset for the
probe, the explained images from the test split), else the builtin digits resized to 32 px. Random-init backbones
(the cost does not depend on the weights). Each analysis runs on a fresh context `repeats` times after one untimed
warm-up run that also fits the probe (the probe is shared by the analyses of one call, so it is not counted); the
median wall time is divided by the images the analysis processes: --images explained images for cam,
attribution, visualize and linear, its own image count for cka (cka_images), dissect (dissect_images) and comet
(training images); filters reads weights only and is reported per call. Analyses a backbone cannot take (attention
on a CNN) are reported as n/a.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import CIFAR  # (importing bench.common also sets the allocator option the CLI sets)
from pretrainlab.data import load_source
from pretrainlab.data.subsets import limit_source
from pretrainlab.eval.target import load_target
from pretrainlab.explain import ANALYSES, ExplainContext, ExplainSettings
from pretrainlab.explain.registry import skip_reason

OPTIONS = {"cka_images": 64, "cka_batch": 32, "dissect_images": 64, "comet_images": 128, "comet_epochs": 1,
           "visualize_steps": 32, "attention_images": 8}
PER_CALL = {"cka": "cka_images", "dissect": "dissect_images", "comet": "comet_images"}


def timed(source, target, analysis: str, images: int, repeats: int, probe: torch.nn.Module | None):  # noqa: ANN001, ANN201
    """Median seconds of `analysis` on fresh contexts around one `target`: the probe (a Classifier around the target's
    backbone) is shared, so the backbone must be that same object, or a CAM would hook a layer the probe never runs."""
    times = []
    for _ in range(repeats):
        torch.manual_seed(0)
        settings = ExplainSettings(images=images, img_size=32, probe_images=500, options=dict(OPTIONS),
                                   show_progress=False)
        with tempfile.TemporaryDirectory() as folder:
            context = ExplainContext(target, source, torch.device("cpu"), Path(folder), settings)
            if probe is not None and context.has_classes:  # the probe is fitted once per backbone, not timed
                context.__dict__["classifier"] = probe
            started = time.perf_counter()
            ANALYSES.get(analysis)(context)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="tinycnn,resnet18")
    parser.add_argument("--analyses", default=",".join(ANALYSES.names()))
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    spec = f"npz:{CIFAR}" if CIFAR.exists() else "builtin"
    source = limit_source(load_source(spec), max_train=500, max_test=200)
    backbones = args.backbones.split(",")
    rows = {}
    for backbone in backbones:
        torch.manual_seed(0)
        target = load_target(f"timm:{backbone}", 32, source.channels)
        warm = ExplainContext(target, source, torch.device("cpu"),
                              Path(tempfile.mkdtemp()), ExplainSettings(images=args.images, img_size=32,
                                                                        probe_images=500, show_progress=False))
        probe = warm.classifier
        for analysis in args.analyses.split(","):
            if skip_reason(analysis, warm.backbone) is not None:
                rows.setdefault(analysis, {})[backbone] = "n/a"
                continue
            timed(source, target, analysis, args.images, 1, probe)  # warm-up
            seconds = timed(source, target, analysis, args.images, args.repeats, probe)
            count = 1 if analysis == "filters" else OPTIONS.get(PER_CALL.get(analysis, ""), args.images)
            rows.setdefault(analysis, {})[backbone] = f"{seconds / count:.4f}"
            print(f"{backbone:10s} {analysis:12s} {seconds:8.2f} s per call, {seconds / count:.4f} s per image",
                  flush=True)
    print(f"\nseconds per image ({source.spec}, 32 px, {args.images} explained images, median of {args.repeats}; "
          "filters: per call)")
    print("| analysis | " + " | ".join(backbones) + " |")
    print("| --- | " + " | ".join("---" for _ in backbones) + " |")
    for analysis, values in rows.items():
        print(f"| {analysis} | " + " | ".join(values.get(b, "") for b in backbones) + " |")


if __name__ == "__main__":
    main()
