"""A run folder with every section a report shows, and hostile names in every user-supplied string.

The explanation and attack outputs are written in the form those layers record (protocols `explain.*` and
`adversarial`, PNG figures under RUN/explain/ and RUN/attack/), so the pages are tested without their code.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from pretrainlab.backbones import create_backbone
from pretrainlab.eval.target import EvalTarget
from pretrainlab.report.network_snapshot import NETWORK_FILE, network_snapshot
from pretrainlab.store import EVALUATIONS_LOG, EvaluationRow, ResultsStore, append_evaluations

HOSTILE_NAME = '"><img src=x onerror=alert(1)>'  # a folder name cannot hold "/", so no closing tag here
HOSTILE_SCRIPT = "<script>alert(2)</script>"
HOSTILE_CAPTION = "<script>alert(3)<"
STEPS = 40
EPOCHS = 4
FRACTIONS = ("1%", "10%", "100%")
NOISE = ("sym20", "sym40")
CORRUPTIONS = ("gaussian_noise", "contrast")


def png_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (64, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def training_metrics() -> list[dict]:
    metrics = [{"step": s, "epoch": s / 10, "lr": 0.1 * min(1, s / 10), "images_per_second": 100 + s,
                "loss": 3.0 / s, "loss_contrast": 2.0 / s, "loss_reg": 1.0 / s, "grad_norm": 1.0 + s / 100}
               for s in range(1, STEPS + 1)]
    metrics += [{"step": 10 * e, "epoch": e, "knn_top1": 40.0 + 10 * e, "knn_k": 20} for e in range(1, EPOCHS + 1)]
    metrics += [{"step": 10 * e, "epoch": e, "filters_degenerate": 0.5 / (e + 1), "filters_entropy": 1.0 + e / 10,
                 "filters_layers": {"conv1": [0.1, 1.2, 0.3], "conv2": [0.2, 1.1, 0.4]}} for e in range(EPOCHS + 1)]
    return metrics


def rows_for(backbone: str, fingerprint: str, data: str, run_path: str | None, offset: float) -> list[EvaluationRow]:
    """knn, linear, label fractions, noisy labels, corruption, explanations and attacks over 2 seeds."""
    rows = []
    for seed in (0, 1):
        def add(protocol: str, metric: str, value: float, settings: dict | None = None, seed: int = seed) -> None:
            rows.append(EvaluationRow(backbone, fingerprint, data, protocol, metric, value + offset + seed, seed, 1.5,
                                      settings=settings or {}, run_path=run_path, created=seed))
        add("knn", "top1", 90.0)
        add("linear", "top1", 92.0)
        for index, fraction in enumerate(FRACTIONS):
            add("few_labels", f"top1@{fraction}", 50.0 + 20 * index)
        add("noisy_labels", "top1@clean", 88.0)
        for index, noise in enumerate(NOISE):
            add("noisy_labels", f"top1@{noise}", 80.0 - 10 * index)
            add("noisy_labels", f"top1@{noise}+elr", 84.0 - 8 * index)
        per_severity = {name: [80.0 - 5 * s - 3 * i for s in range(5)] for i, name in enumerate(CORRUPTIONS)}
        add("corruption", "top1@clean", 90.0, {"per_severity_top1": per_severity})
        add("corruption", "top1@corrupted", 70.0, {"per_severity_top1": per_severity})
        add("adversarial", "top1@clean", 85.0)
        for eps, drop in (("2/255", 20.0), ("4/255", 40.0), ("8/255", 70.0)):
            add("adversarial", f"pgd_linf@{eps}", 85.0 - drop)
        if run_path is not None:
            for layer in range(1, 4):
                add("explain.attention", f"distance@layer{layer}", 2.0 * layer)
            add("explain.filters", "degenerate", 0.1)
    return rows


def write_network(run_dir: Path, labels: list[str]) -> None:
    torch.manual_seed(0)
    backbone = create_backbone("tinycnn", 28, 1)
    images = np.random.default_rng(0).integers(0, 256, (len(labels), 28, 28, 1), dtype=np.uint8)
    snapshot = network_snapshot(EvalTarget(backbone, "t", 28), images, labels, torch.tensor([0.5]),
                                torch.tensor([0.25]), torch.device("cpu"))
    (run_dir / NETWORK_FILE).write_text(json.dumps(snapshot))


def make_full_run(root: Path, store: Path, name: str = HOSTILE_NAME, data: str = HOSTILE_SCRIPT) -> Path:
    """A run folder with every section filled, its store (with the random-init baseline) at `store`."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {"method": "simclr", "backbone": "tinycnn", "data": data, "train": {"epochs": EPOCHS, "batch_size": 64},
              "resolved": {"img_size": 28, "in_chans": 1, "split": "given", "train_images": 640, "steps_per_epoch": 10,
                           "device": "cpu: x86_64", "pretrainlab": "0.1.0", "torch": "2", "python": "3.11"}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in training_metrics()))
    (run_dir / "reconstructions.png").write_bytes(png_bytes((200, 10, 10)))
    for folder, names in (("explain", ["cam.png", f"{HOSTILE_CAPTION}.png"]), ("attack", ["pgd_linf.png"])):
        (run_dir / folder).mkdir()
        for index, file_name in enumerate(names):
            (run_dir / folder / file_name).write_bytes(png_bytes((10 * index, 120, 200)))
    rows = rows_for(str(run_dir), "sha256:1", data, str(run_dir.resolve()), 0.0)
    append_evaluations(run_dir / EVALUATIONS_LOG, rows)
    ResultsStore(store).add_evaluations(rows + rows_for("timm:tinycnn", "random-init:abc", data, None, -30.0))
    write_network(run_dir, ["zero", HOSTILE_SCRIPT, HOSTILE_NAME])
    return run_dir


def comparison_rows(data_specs: tuple[str, ...] = ("builtin", HOSTILE_SCRIPT)) -> list[EvaluationRow]:
    """Three backbones (one named hostilely) on two data specs."""
    rows = []
    for data in data_specs:
        for backbone, offset in (("timm:resnet18", 0.0), (HOSTILE_NAME, -20.0), ("runs/simclr", 5.0)):
            rows += [row for row in rows_for(backbone, f"f-{backbone}", data, None, offset)
                     if not row.protocol.startswith("explain.")]
    return rows
