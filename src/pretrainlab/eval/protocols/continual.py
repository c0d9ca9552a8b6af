"""Class-incremental continual learning with a frozen backbone and a nearest-class-mean classifier.

Janson, Zhang, Aljundi, Elhoseiny, "A Simple Baseline that Questions the Use of Pretrained-Models
in Continual Learning", arXiv 2210.04428: the frozen pre-trained network embeds every image; after
each task the mean feature of each new class is stored (no exemplars, nothing trained, so nothing
is forgotten) and a test image takes the class of the nearest stored mean. The classes are split
into `tasks` groups in an order drawn by the seed; after task t the test images of every class
seen so far are classified among those classes.

Metrics: `avg_incremental_top1`, the mean over tasks of that accuracy (Rebuffi et al.'s average
incremental accuracy, arXiv 1611.07725), and `final_top1`, the accuracy after the last task.

Options: tasks (default 5), distance (euclidean, default | cosine), seed.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, takes_options
from pretrainlab.eval.record import EvalResult

DISTANCES = ("euclidean", "cosine")


def task_splits(classes: np.ndarray, tasks: int, seed: int) -> list[np.ndarray]:
    """The classes in an order drawn by `seed`, cut into `tasks` groups of (nearly) equal size."""
    if not 1 <= tasks <= len(classes):
        raise PretrainlabError(f"continual learning needs 1 <= tasks <= number of classes ({len(classes)}), "
                               f"got tasks={tasks}")
    order = np.random.default_rng(seed).permutation(classes)
    return [np.sort(part) for part in np.array_split(order, tasks)]


def class_means(features: torch.Tensor, labels: torch.Tensor, classes: np.ndarray) -> torch.Tensor:
    """(len(classes), D): the mean feature of each class in `classes`, from features (N, D) and labels (N,)."""
    return torch.stack([features[labels == int(cls)].mean(dim=0) for cls in classes])


def nearest_mean(features: torch.Tensor, means: torch.Tensor, classes: torch.Tensor, distance: str) -> torch.Tensor:
    """The class (from `classes`, (C,)) of the nearest mean (C, D) to each feature (M, D)."""
    if distance == "cosine":
        scores = F.normalize(features, dim=1) @ F.normalize(means, dim=1).T  # (M, C) similarity
    else:
        scores = -torch.cdist(features, means)  # (M, C)
    return classes[scores.argmax(dim=1)]


def incremental_accuracies(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                           test_labels: torch.Tensor, splits: list[np.ndarray], distance: str) -> list[float]:
    """Top-1 % after each task on the test images of all classes seen so far."""
    if distance not in DISTANCES:
        raise PretrainlabError(f"unknown distance {distance!r}; valid distances: {', '.join(DISTANCES)}")
    seen: list[int] = []
    means: list[torch.Tensor] = []
    accuracies = []
    for task_classes in splits:
        present = [int(cls) for cls in task_classes if bool((train_labels == int(cls)).any())]
        seen += present
        means.append(class_means(train_features, train_labels, np.array(present)))
        seen_classes = torch.tensor(seen)
        evaluated = torch.isin(test_labels, seen_classes)
        predicted = nearest_mean(test_features[evaluated], torch.cat(means), seen_classes, distance)
        accuracies.append(float((predicted == test_labels[evaluated]).float().mean()) * 100)
    return accuracies


@PROTOCOLS.register("continual")
@takes_options("tasks", "distance")
def continual_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    seed = int(context.options.get("seed", 0))
    tasks = int(context.options.get("tasks", 5))
    distance = str(context.options.get("distance", "euclidean"))
    train_labels = context.labels("train")
    splits = task_splits(np.unique(train_labels.numpy()), tasks, seed)
    accuracies = incremental_accuracies(context.features("train").float(), train_labels,
                                        context.features("test").float(), context.labels("test"), splits, distance)
    settings = {**context.base_settings(), "tasks": tasks, "distance": distance, "seed": seed,
                "class_order": [[int(cls) for cls in part] for part in splits],
                "per_task_top1": [round(value, 4) for value in accuracies], "classifier": "nearest class mean"}
    seconds = time.perf_counter() - started
    return [EvalResult("continual", context.source.spec, metric, value, seconds, settings=settings,
                       backbone=context.target.label)
            for metric, value in (("avg_incremental_top1", float(np.mean(accuracies))),
                                  ("final_top1", accuracies[-1]))]
