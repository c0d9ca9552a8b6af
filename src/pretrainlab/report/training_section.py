"""The top of a run's page: what was trained and how, and its training curves from metrics.jsonl."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pretrainlab.report.html import hint, table
from pretrainlab.report.svg import line_chart, multi_line_chart

# Keys of a training record that are not curves of their own (or are drawn in their own chart).
BOOKKEEPING = {"step", "epoch", "lr", "images_per_second"}
MAX_SCALAR_CHARTS = 12


def split_metrics(metrics: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training records (they carry a loss) and monitor records (online kNN, filter health: per epoch)."""
    training = [record for record in metrics if "loss" in record and "step" in record]
    monitor = [record for record in metrics if "loss" not in record]
    return training, monitor


def warmup_text(train: dict[str, Any], resolved: dict[str, Any]) -> str:
    """The warm-up the run used: the resolved length (a recipe's default is None in `train`), in epochs and steps."""
    epochs = resolved.get("warmup_epochs", train.get("warmup_epochs"))
    if epochs is None:
        return "not recorded"
    steps = resolved.get("warmup_steps")
    return f"{epochs:g} epochs" + (f" ({steps} steps)" if steps is not None else "")


def facts_table(run_dir: Path, config: dict[str, Any], training: list[dict[str, Any]]) -> str:
    """What, on what, how long, where and with which versions."""
    resolved = config.get("resolved", {}) or {}
    train = config.get("train", {}) or {}
    steps = int(training[-1]["step"]) if training else 0
    planned = resolved.get("steps_per_epoch", 0) * train.get("epochs", 0) if resolved.get("steps_per_epoch") else "?"
    rates = [record["images_per_second"] for record in training if "images_per_second" in record]
    facts = [
        ["method", str(config.get("method", "?"))], ["backbone", str(config.get("backbone", "?"))],
        ["data", str(config.get("data", "?"))],
        ["split", f"{resolved.get('split', '?')}; {resolved.get('train_images', '?')} training images"
                  + (f" (max_train {config['max_train']})" if config.get("max_train") else "")],
        ["image size / channels", f"{resolved.get('img_size', '?')} px, {resolved.get('in_chans', '?')}"],
        ["budget", f"{train.get('epochs', '?')} epochs x {resolved.get('steps_per_epoch', '?')} steps, batch "
                   f"{train.get('batch_size', '?')}; {steps} of {planned} steps logged"],
        ["optimiser", f"{train.get('optimizer', '?')}, lr {train.get('lr', '?')} "
                      f"({train.get('lr_scaling', '?')} scaling), weight decay {train.get('weight_decay', '?')}, "
                      f"warm-up {warmup_text(train, resolved)}, precision {train.get('precision', '?')}"],
        ["machine", f"{resolved.get('device', 'device not recorded')}; {resolved.get('world_size', 1)} process(es)"
                    + (f"; {rates[-1]:.0f} images/s at the end" if rates else "")],
        ["versions", ", ".join(f"{name} {resolved[name]}" for name in ("pretrainlab", "torch", "timm", "python")
                               if name in resolved) or "not recorded"],
        ["seed", str(train.get("seed", "?"))], ["folder", str(run_dir.resolve())],
    ]
    return table(["", ""], facts, numeric_from=2)


def numeric_keys(records: list[dict[str, Any]]) -> list[str]:
    return sorted({key for record in records for key, value in record.items()
                   if isinstance(value, int | float) and not isinstance(value, bool)})


def series_of(records: list[dict[str, Any]], key: str, x_key: str = "step") -> tuple[list[float], list[float]]:
    chosen = [record for record in records if key in record and x_key in record]
    return [record[x_key] for record in chosen], [record[key] for record in chosen]


def training_curves(training: list[dict[str, Any]]) -> list[str]:
    """Loss and its terms in one chart, learning rate, images/s, and every other logged scalar."""
    keys = [key for key in numeric_keys(training) if key not in BOOKKEEPING]
    loss_terms = [key for key in keys if "loss" in key]
    charts = [multi_line_chart({key: series_of(training, key) for key in loss_terms}, "pre-training loss per term",
                               "step", "loss")]
    if any("lr" in record for record in training):
        charts.append(line_chart(*series_of(training, "lr"), "learning rate", "step", "lr"))
    if any("images_per_second" in record for record in training):
        charts.append(line_chart(*series_of(training, "images_per_second"), "throughput", "step", "images/s"))
    others = [key for key in keys if key not in loss_terms][:MAX_SCALAR_CHARTS]
    charts += [line_chart(*series_of(training, key), key, "step", key) for key in others]
    return charts


def curves_section(metrics: list[dict[str, Any]]) -> list[str]:
    training, monitor = split_metrics(metrics)
    parts = ["<h2 id=\"training\">Training</h2>"]
    if not metrics:
        return [*parts, hint("no metrics.jsonl in this folder: `pretrainlab pretrain ... --out RUN` writes it.")]
    parts += training_curves(training)
    knn = [record for record in monitor if "knn_top1" in record]
    if knn:
        parts.append(line_chart(*series_of(knn, "knn_top1", "epoch"),
                                f"online kNN top-1 (k={knn[-1].get('knn_k', '?')})", "epoch", "top-1 %"))
    else:
        parts.append(hint("no online kNN monitor in this run: train with `--knn-every N` to fill this."))
    return parts
