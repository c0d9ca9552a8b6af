"""Library entry points that tie the layers together: pre-train a run, evaluate a backbone.

The CLI only parses flags into these calls; notebooks and scripts call them directly.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

import pretrainlab
from pretrainlab.backbones import Backbone, create_backbone, save_backbone
from pretrainlab.backbones.token_vit import check_token_pairing, token_backbone_options
from pretrainlab.config import build_config
from pretrainlab.data import ImageSource, load_source
from pretrainlab.data.captions import caption_texts
from pretrainlab.data.shard_source import StreamSource, open_stream
from pretrainlab.data.subsets import limit_source
from pretrainlab.distributed import is_distributed, rank, world_size
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval import EvalContext, EvalResult, EvalTarget, evaluate, load_target
from pretrainlab.eval.features import extract_features
from pretrainlab.eval.gauntlet import GauntletOutcome, plan_protocols, run_gauntlet, state_fingerprint
from pretrainlab.eval.knn import as_labels, knn_accuracy
from pretrainlab.eval.protocols import PROTOCOLS, check_options
from pretrainlab.eval.token_targets import fit_token_target
from pretrainlab.methods import METHODS, MethodContext
from pretrainlab.methods.base import Method
from pretrainlab.methods.parts.local_views import adapt_local_views
from pretrainlab.methods.parts.mirroring import adapt_mirroring
from pretrainlab.methods.parts.reconstruction import save_reconstruction_grid
from pretrainlab.methods.parts.small_images import adapt_crops_to_image_size
from pretrainlab.report import write_run_report
from pretrainlab.report.run_outputs import finish_run_outputs
from pretrainlab.store import DEFAULT_STORE, EvaluationRecorder, ResultsStore, file_fingerprint
from pretrainlab.train.config import RunConfig, TrainConfig
from pretrainlab.train.loop import Trainer
from pretrainlab.train.run_folder import (  # noqa: F401  (resume_config, saved_run_config: this module's API)
    check_new_run_folder,
    check_resume_folder,
    remove_stale_temporaries,
    resume_config,
    saved_run_config,
    write_config,
)

log = logging.getLogger(__name__)

RANDOM_INIT_SEED = 0


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if is_distributed() and torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PretrainlabError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PretrainlabError(f"device '{name}' requested but no CUDA GPU is available; use --device cpu")
    return device


def setup_distributed(timeout_seconds: float = 1800.0) -> None:
    """Joins the process group torchrun describes in the environment (no-op for a single process).

    `timeout_seconds` bounds every collective: a peer that hangs ends the run with an error instead of a stall.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds))


def named_recipe(recipe: Path) -> Path:
    """A recipe file, or the name of a packaged recipe (`--recipe mae_small_data` is recipes/mae_small_data.yaml)."""
    if Path(recipe).is_file():
        return Path(recipe)
    packaged = resources.files("pretrainlab") / "recipes" / f"{Path(recipe).name}.yaml"
    if Path(recipe).name == str(recipe) and packaged.is_file():
        return Path(str(packaged))
    names = sorted(entry.name.removesuffix(".yaml") for entry in (resources.files("pretrainlab") / "recipes").iterdir()
                   if entry.name.endswith(".yaml"))
    raise PretrainlabError(f"recipe file not found: {recipe} (a file, or a packaged recipe name: {', '.join(names)})")


def recipe_values(method: str, recipe: Path | None = None) -> dict[str, Any]:
    """The YAML recipe: `recipe` (a file or a packaged recipe's name) if given, else the packaged
    `recipes/METHOD.yaml` when there is one.

    A composition (`compose:a+b`) uses the packaged recipes/compose.yaml when that file is written for it.
    """
    METHODS.get(method)  # unknown names fail here, with the valid ones listed
    if recipe is not None:
        recipe = named_recipe(recipe)
        text = Path(recipe).read_text()
    else:
        packaged = resources.files("pretrainlab") / "recipes" / f"{method.partition(':')[0]}.yaml"
        if not packaged.is_file():
            return {"method": method}
        text = packaged.read_text()
        if ":" in method and (yaml.safe_load(text) or {}).get("method") != method:
            return {"method": method}  # the packaged composition recipe is for another composition
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise PretrainlabError(f"recipe {recipe}: cannot read it as YAML ({problem})") from None
    if not isinstance(values, dict):
        raise PretrainlabError(f"recipe {recipe} holds a {type(values).__name__}; a recipe is a YAML mapping "
                               "(method:, backbone:, train: {...}, method_options: {...})")
    if values.get("method", method) != method:
        raise PretrainlabError(f"recipe is for method '{values['method']}', not '{method}'")
    return values


def recipe_train_for_backbone(by_backbone: Any, backbone: str | None) -> dict[str, Any]:
    """A recipe's `train_by_backbone: {NAME: {train settings}}` entry for `backbone` ({} when it has none).

    Settings measured better for one architecture than the recipe's own (e.g. LARS's trust coefficient on
    timm's resnet18, docs/methods.md); they land in config.yaml's `train` like any recipe value.
    """
    if by_backbone is None:
        return {}
    if not isinstance(by_backbone, dict) or not all(isinstance(v, dict) for v in by_backbone.values()):
        raise PretrainlabError("recipe: train_by_backbone must map backbone names to train settings, e.g. "
                               "{resnet18: {lars_trust: 0.001}}")
    return dict(by_backbone.get(backbone, {}))


def build_run_config(method: str, overrides: dict[str, Any], train_overrides: dict[str, Any],
                     option_overrides: dict[str, Any], recipe: Path | None = None) -> RunConfig:
    """Dataclass defaults < recipe < the recipe's settings for the chosen backbone (`train_by_backbone`) <
    overrides (flags the user gave; None values are ignored)."""
    values = recipe_values(method, recipe)
    values["method"] = method
    values.update({k: v for k, v in overrides.items() if v is not None})
    train = dict(values.pop("train", {}) or {})
    train.update(recipe_train_for_backbone(values.pop("train_by_backbone", None), values.get("backbone")))
    train.update({k: v for k, v in train_overrides.items() if v is not None})
    options = dict(values.pop("method_options", {}) or {})
    for key, value in option_overrides.items():
        target = options
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    values["train"] = build_config(TrainConfig, train, "train")
    values["method_options"] = options
    config = build_config(RunConfig, values, "run")
    build_config(METHODS.get(method).config_class, options, method)  # validate options early
    return config


def method_context(source: ImageSource | StreamSource, img_size: int) -> MethodContext:
    mean, std = source.channel_stats()
    return MethodContext(img_size=img_size, in_chans=source.channels, mean=tuple(mean), std=tuple(std),
                         num_classes=source.num_classes, dataset_size=len(source.train),
                         captions=() if isinstance(source, StreamSource) else caption_texts(source.train),
                         tokenizer=getattr(source, "tokenizer", None),
                         class_names=tuple(getattr(source, "classes", None) or ()))


def training_source(config: RunConfig) -> ImageSource | StreamSource:
    """The data to pre-train on: decoded (and cached) images, or shards streamed by loader workers."""
    kind, _, argument = config.data.partition(":")
    decode_size = config.decode_size or config.img_size
    if kind != "shards":
        source = load_source(config.data, image_size=decode_size, download=config.download,
                             aspect=config.decode_aspect)
        return limit_source(source, config.max_train)
    if config.max_train is not None:
        raise PretrainlabError("--max-train takes a subset of decoded data; with shards, write a smaller shard set")
    return open_stream(argument, image_size=decode_size, aspect=config.decode_aspect)


def knn_monitor(source: ImageSource, context: MethodContext, device: torch.device):  # noqa: ANN201
    """An online kNN probe on the source's own labelled splits, for `TrainConfig.knn_every`."""
    mean, std = torch.tensor(context.mean), torch.tensor(context.std)

    def monitor(backbone: Backbone, epoch: int) -> dict[str, float]:
        target = EvalTarget(backbone, "online", context.img_size)
        train = extract_features(target, source.train.images, mean, std, device)
        test = extract_features(target, source.test.images, mean, std, device)
        accuracy, k = knn_accuracy(train, as_labels(source.train.labels), test, as_labels(source.test.labels))
        log.info("epoch %d: online kNN top-1 %.2f %% (k=%d)", epoch, accuracy, k)
        return {"knn_top1": accuracy, "knn_k": k}

    return monitor


def build_method(config: RunConfig, context: MethodContext,
                 source: ImageSource | StreamSource | None = None) -> tuple[Method, dict[str, Any]]:
    """The method around a freshly initialised backbone, seeded: identical weights on every rank and rerun; with
    the view options adapted to the source (data that is not mirror-invariant, small decoded images; what was
    adapted and why, for config.yaml). Without a source nothing is adapted but the training size."""
    torch.manual_seed(config.train.seed)
    options = token_backbone_options(config.backbone, config.backbone_options, context.tokenizer)
    backbone = create_backbone(config.backbone, context.img_size, context.in_chans, **options)
    check_token_pairing(backbone.model, config.backbone, context.tokenizer, config.data)
    method_class = METHODS.get(config.method)
    method_config = build_config(method_class.config_class, config.method_options, config.method)
    method_config, flips = adapt_mirroring(method_config, config.method_options,
                                           getattr(source, "mirror_invariant", True))
    side = min((context.img_size, *source.image_size) if source is not None else (context.img_size,))
    method_config, crops = adapt_crops_to_image_size(method_config, config.method_options,
                                                     method_class.small_image_crop_side, side)
    method_config, locals_, local_reason = adapt_local_views(method_config, config.method_options,
                                                            method_class.local_view_count_option, backbone,
                                                            context.img_size)
    reasons = (["the data is not mirror-invariant"] if flips else []) + (
        [f"crops keep at least {method_class.small_image_crop_side} px a side of {side}-px images"] if crops else []
    ) + ([local_reason] if local_reason else [])
    adapted = {**flips, **crops, **locals_, **({"reason": "; ".join(reasons)} if reasons else {})}
    try:
        return method_class(backbone, method_config, context), adapted
    except ValueError as error:  # losses and heads raise ValueError for out-of-range hyperparameters
        raise PretrainlabError(f"invalid {config.method} options: {error}") from None


def filter_monitor(backbone: Backbone, epoch: int) -> dict[str, Any]:
    """The health of the backbone's 3x3 filters, for `TrainConfig.filters_every` (explain/filters.py)."""
    from pretrainlab.explain.filters import filter_monitor_record

    return filter_monitor_record(backbone.model)


def pretrain(config: RunConfig, resume: bool = False, show_progress: bool = True,
             source: ImageSource | None = None) -> dict[str, Any]:
    """Pre-trains `config.method` and leaves a run folder; returns a summary (steps, seconds, images/s).

    With `resume`, `config` must be the run's saved configuration (`resume_config`).
    """
    setup_distributed(config.train.dist_timeout)
    run_dir = Path(config.out)
    # Every rank checks before rank 0 writes: config.yaml is written after the Trainer's DDP set-up, a collective.
    if resume:
        check_resume_folder(run_dir)
    else:
        check_new_run_folder(run_dir)
    if is_distributed():  # fsdp's set-up holds no collective: every rank has checked before rank 0 writes
        torch.distributed.barrier()
    device = resolve_device(config.train.device)
    source = limit_source(source, config.max_train) if source is not None else training_source(config)
    img_size = config.img_size or source.image_size[0]
    context = method_context(source, img_size)
    if METHODS.get(config.method).needs_labels and isinstance(source, StreamSource):
        source.require_labels(f"method '{config.method}'")
    method, adapted = build_method(config, context, source)
    method = method.to(device)
    train_set, label_notes = source.train, {}
    if isinstance(source, ImageSource):  # e.g. noisy labels, fixed by seed (streamed shards keep theirs)
        train_labels, label_notes = method.training_labels(source.train.labels)
        if train_labels is not source.train.labels:
            train_set = dataclasses.replace(source.train, labels=train_labels)
    # the monitor keeps the clean labels: it measures the representation, not the fit to the noise
    monitored = isinstance(source, ImageSource) and source.labelled and source.test is not None
    monitor = knn_monitor(source, context, device) if monitored else None
    trainer = Trainer(method, train_set, config.train, run_dir, device, monitor, show_progress, filter_monitor)
    if rank() == 0 and not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, config, {
            "img_size": img_size, "in_chans": source.channels, "mean": list(context.mean), "std": list(context.std),
            "num_classes": source.num_classes, "train_images": len(source.train), "split": source.split_note,
            "decoded_shape": list(source.image_size),
            "steps_per_epoch": trainer.steps_per_epoch, "world_size": world_size(),
            "warmup_epochs": round(trainer.warmup_epochs, 3), "warmup_steps": trainer.warmup_steps,
            "lr": config.train.scaled_lr,
            "adapted_options": adapted,
            "pretrainlab": pretrainlab.__version__, "torch": str(torch.__version__), **machine_facts(device),
            **label_notes,
        })
    if rank() == 0 and resume:
        remove_stale_temporaries(run_dir)
    summary = trainer.fit(resume=resume)
    if config.train.strategy == "fsdp" and is_distributed():  # the grid needs the whole method on rank 0
        state = trainer.strategy.full_state()
        if rank() == 0:
            method = build_method(config, context, source)[0].to(device)
            method.load_state_dict(state)
    if rank() == 0:  # input / masked / reconstructed rows, for methods that reconstruct pixels
        preview = source.preview if isinstance(source, StreamSource) else source.train
        save_reconstruction_grid(method, preview.images, run_dir / "reconstructions.png", device)
        method.save_artifacts(run_dir)  # e.g. CLIP's text tower beside backbone.safetensors
        summary["report"] = str(finish_run_outputs(run_dir, config, EvalTarget(
            method.backbone, str(run_dir), img_size, context.mean, context.std, run_dir), source, device))
    summary.update({"run_dir": str(run_dir), "method": config.method, "backbone": config.backbone})
    return summary


def machine_facts(device: torch.device) -> dict[str, str]:
    """Where a run trained and with which versions, for its config.yaml and report."""
    import platform

    import timm

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"device": f"{device.type}: {name}", "timm": timm.__version__, "python": platform.python_version()}


def untrained_run(config: RunConfig, source: ImageSource | None = None) -> Path:
    """Writes `config`'s run folder as it stands before the first step: the same seed's random init, exported.

    The fair random baseline of methods whose evaluation needs more than the backbone (CLIP's text tower
    and projections): a `timm:NAME` baseline has no text side. Nothing is trained; no checkpoint is written.
    """
    run_dir = Path(config.out)
    check_new_run_folder(run_dir)
    source = limit_source(source or load_source(config.data, image_size=config.img_size), config.max_train)
    img_size = config.img_size or source.image_size[0]
    context = method_context(source, img_size)
    method = build_method(config, context, source)[0]  # the initial weights pretrain() starts from
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config, {"img_size": img_size, "in_chans": source.channels, "mean": list(context.mean),
                                   "std": list(context.std), "num_classes": source.num_classes,
                                   "train_images": len(source.train), "split": source.split_note, "untrained": True,
                                   "pretrainlab": pretrainlab.__version__, "torch": str(torch.__version__)})
    save_backbone(method.backbone, run_dir / "backbone.safetensors")
    method.save_artifacts(run_dir)
    return run_dir


def evaluate_backbone(spec: str, data: str, protocols: list[str], device: str = "auto",
                      weights: Path | None = None, img_size: int | None = None, options: dict[str, Any] | None = None,
                      source: ImageSource | None = None, download: bool = False,
                      store: Path | str | None = None) -> list[EvalResult]:
    """Evaluates a run folder or `timm:NAME` on a source with each protocol (each checks the data has what
    it needs); with `store`, the results are also recorded (run folder's evaluations.jsonl, then the store)."""
    check_options(protocols, options or {})  # an option no protocol reads is an error, not silently ignored
    source = source or load_source(data, image_size=img_size, download=download)
    target = seeded_target(spec, img_size or source.image_size[0], source.channels, weights)
    fit_token_target(target, source)
    context = EvalContext(target, source, resolve_device(device), dict(options or {}))
    recorder = None if store is None else EvaluationRecorder(ResultsStore(store), target.label,
                                                             weights_fingerprint(target, weights), target.run_dir)
    results = []
    for protocol in protocols:
        started = time.perf_counter()
        produced = evaluate(context, protocol)
        if recorder is not None:
            recorder(produced, int(context.options.get("seed", 0)), time.perf_counter() - started)
        results.extend(produced)
    return results


def seeded_target(spec: str, img_size: int, in_chans: int, weights: Path | None = None) -> EvalTarget:
    """`load_target` with the random init of a timm:NAME drawn from seed 0, whatever the global generator's
    state: every command evaluates the same random baseline, so its results share one fingerprint."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return load_target(spec, img_size, in_chans, weights)


def weights_fingerprint(target: EvalTarget, weights: Path | None) -> str:
    """Names the evaluated weights: the run's exported file, the --weights file, or a random model's tensors."""
    if target.run_dir is not None:
        return file_fingerprint(target.run_dir / "backbone.safetensors")
    if weights is not None:
        return file_fingerprint(Path(weights))
    return f"random-init:{state_fingerprint(target.backbone)}"


def gauntlet(spec: str, data: str, protocols: list[str] | None = None, seeds: int = 3,
             store: Path | str = DEFAULT_STORE, weights: Path | None = None, device: str = "auto",
             img_size: int | None = None, options: dict[str, Any] | None = None, download: bool = False,
             keep_going: bool = False, max_train: int | None = None, max_test: int | None = None) -> GauntletOutcome:
    """Puts a run folder or `timm:NAME` through every protocol that applies to `data` (or `protocols`), once
    per seed 0..seeds-1; every per-seed result goes to the run folder's evaluations.jsonl and the store.
    `max_train` / `max_test` evaluate on fixed class-balanced subsets (named in the results' data spec)."""
    if seeds < 1:
        raise PretrainlabError(f"--seeds must be at least 1, got {seeds}")
    check_options(protocols or PROTOCOLS.names(), options or {})
    source = limit_source(load_source(data, image_size=img_size, download=download), max_train, max_test)
    plan = plan_protocols(source, protocols)  # bad protocol names fail before any work
    target = seeded_target(spec, img_size or source.image_size[0], source.channels, weights)
    fit_token_target(target, source)
    recorder = EvaluationRecorder(ResultsStore(store), target.label, weights_fingerprint(target, weights),
                                  target.run_dir)
    context = EvalContext(target, source, resolve_device(device), dict(options or {}))
    outcome = run_gauntlet(context, plan, range(seeds), recorder, keep_going)
    if target.run_dir is not None:
        write_run_report(target.run_dir, store)
    return outcome


def replace_train(config: RunConfig, **changes: Any) -> RunConfig:
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **changes))
