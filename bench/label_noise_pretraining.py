"""Label noise in supervised pre-training, measured in-domain and out-of-domain (NMTune's first claim).

"Understanding and Mitigating the Label Noise in Pre-training on Downstream Tasks" (Chen et al., arXiv
2309.17002) reports that slight label noise in pre-training can help in-domain transfer and always hurts
out-of-domain transfer. This pre-trains `supervised` tinycnn on the embedded MNIST digits (`builtin`, its
fixed 4,000-image training split) at several noise rates (`--option label_noise=R`, noise seed = training seed),
then linear-probes the frozen backbone with clean labels in-domain (builtin's own split) and out-of-domain
(a fixed class-balanced Fashion-MNIST subset), next to a random-init tinycnn; and, NMTune's second claim, tunes
the same frozen features with NMTune (the `noisy_labels` protocol's clean-label heads: NMTune's MLP with its three
regularisers, the same MLP without them, and a linear head trained the same way) to see whether it recovers
what the noise cost.

    python bench/label_noise_pretraining.py --rates 0,0.05,0.1,0.2,0.4     # rows in bench/results/label_noise/
    python bench/label_noise_pretraining.py --rates 0,0.05,0.1,0.2,0.4 --seed 1   # another seed (training + noise)
    python bench/label_noise_pretraining.py --render                       # docs/label_noise_pretraining.md

Resumable: a rate whose row exists is skipped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from pretrainlab.data import load_source
from pretrainlab.data.source import ImageSource
from pretrainlab.data.subsets import limit_source
from pretrainlab.eval import EvalContext, EvalTarget, evaluate
from pretrainlab.eval.target import load_run_target
from pretrainlab.pipeline import build_run_config, pretrain, seeded_target

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.` imports when run as a script
from bench.common import replace_block  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "label_noise"
DOC = ROOT / "docs" / "label_noise_pretraining.md"
OOD_DATA = Path("/work/shared/data/fashion_mnist.npz")
BACKBONE = "tinycnn"


NMTUNE_KEYS = {"top1@nmtune": "nmtune", "top1@mlp": "mlp", "top1@clean": "head_linear"}
DOMAINS = ("in_domain", "out_of_domain")


def probes(target: EvalTarget, source: ImageSource) -> dict[str, float]:
    """Linear probe (L-BFGS) and NMTune's clean-label heads: NMTune, its MLP alone, a linear head trained alike."""
    # one context: both protocols read the features it extracts once (the linear probe ignores `noise`)
    context = EvalContext(target, source, torch.device("cpu"), {"seed": 0, "noise": []})
    out = {"linear": evaluate(context, "linear")[0].value}
    for result in evaluate(context, "noisy_labels"):
        out[NMTUNE_KEYS[result.metric]] = result.value
    return out


def measure(rate: float | None, noise: str, args: argparse.Namespace, in_domain: ImageSource,
            out_of_domain: ImageSource) -> dict:
    """One row: pre-train at `rate` (None: random init, no pre-training), then both linear probes."""
    started = time.perf_counter()
    notes = {}
    if rate is None:
        target = seeded_target(f"timm:{BACKBONE}", 28, 1)
    else:
        out = ROOT / "runs" / "bench-label-noise" / f"{noise}-{rate}-seed{args.seed}"
        if out.exists():
            shutil.rmtree(out)
        options = {"label_noise": rate, "noise": noise, "noise_seed": args.seed} if rate > 0 else {}
        config = build_run_config("supervised", {"backbone": BACKBONE, "data": "builtin", "out": str(out)},
                                  {"epochs": args.epochs, "batch_size": args.batch_size, "warmup_epochs": 1.0,
                                   "seed": args.seed}, options)
        summary = pretrain(config, source=in_domain, show_progress=False)
        notes = {"final_loss": summary["final_loss"], "run": str(out.relative_to(ROOT))}
        target = load_run_target(out)
    scores = {f"{domain}_{name}": value for domain, source in zip(DOMAINS, (in_domain, out_of_domain), strict=True)
              for name, value in probes(target, source).items()}
    return {"rate": rate, "noise": noise, "seed": args.seed, "epochs": args.epochs, "batch_size": args.batch_size,
            **scores, "in_domain": in_domain.spec, "out_of_domain": out_of_domain.spec, **notes,
            "seconds": time.perf_counter() - started, "measured": time.strftime("%Y-%m-%d %H:%M")}


def summarise(rows: list[dict]) -> dict:
    """Mean and sample standard deviation over the seeds of one setting, per probe."""
    out = {"seeds": sorted(r["seed"] for r in rows)}
    for key in [f"{domain}_{name}" for domain in DOMAINS for name in ("linear", "nmtune", "mlp", "head_linear")]:
        values = torch.tensor([r[key] for r in rows], dtype=torch.float64)
        out[key] = float(values.mean())
        out[key + "_std"] = float(values.std()) if len(values) > 1 else None
    return out


def cell(mean: float, std: float | None) -> str:
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def setting_name(noise: str, rate: float | None) -> str:
    return "random init (no pre-training)" if rate is None else "clean" if rate == 0 else f"{noise} {rate:.0%} noise"


def delta(row: dict, clean: dict | None, key: str, rate: float | None) -> str:
    """`row[key]` minus the clean pre-training's, blank for the clean and random rows."""
    if clean is None or rate in (None, 0):
        return ""
    return f"{row[key] - clean[key]:+.2f}"


def linear_table(summary: dict) -> list[str]:
    clean = summary.get(("", 0.0))
    lines = ["| pre-training labels | seeds | in-domain linear top-1 (MNIST) | vs clean | out-of-domain linear top-1 "
             "(Fashion-MNIST) | vs clean |", "| --- | --- | --- | --- | --- | --- |"]
    for (noise, rate), row in summary.items():
        lines.append(f"| {setting_name(noise, rate)} | {len(row['seeds'])} | "
                     f"{cell(row['in_domain_linear'], row['in_domain_linear_std'])} | "
                     f"{delta(row, clean, 'in_domain_linear', rate)} | "
                     f"{cell(row['out_of_domain_linear'], row['out_of_domain_linear_std'])} | "
                     f"{delta(row, clean, 'out_of_domain_linear', rate)} |")
    return lines


def nmtune_table(summary: dict) -> list[str]:
    """Per domain and setting: the linear head, NMTune's MLP alone and NMTune, each against clean pre-training."""
    clean = summary.get(("", 0.0))
    lines = ["| probe data | pre-training labels | seeds | linear head (AdamW) | vs clean | MLP, no regularisers | "
             "NMTune | vs clean | NMTune - MLP | NMTune - linear head |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for domain, label in zip(DOMAINS, ("in-domain (MNIST)", "out-of-domain (Fashion-MNIST)"), strict=True):
        for (noise, rate), row in summary.items():
            linear, mlp, nmtune = (f"{domain}_{name}" for name in ("head_linear", "mlp", "nmtune"))
            lines.append(f"| {label} | {setting_name(noise, rate)} | {len(row['seeds'])} | "
                         f"{cell(row[linear], row[linear + '_std'])} | {delta(row, clean, linear, rate)} | "
                         f"{cell(row[mlp], row[mlp + '_std'])} | {cell(row[nmtune], row[nmtune + '_std'])} | "
                         f"{delta(row, clean, nmtune, rate)} | {row[nmtune] - row[mlp]:+.2f} | "
                         f"{row[nmtune] - row[linear]:+.2f} |")
    return lines


def render() -> None:
    rows = [json.loads(p.read_text()) for p in RESULTS.glob("*.json")]
    if not rows:
        return
    settings = sorted({(r["noise"] if r["rate"] else "", r["rate"]) for r in rows},
                      key=lambda s: (-1 if s[1] is None else s[1], s[0]))
    summary = {s: summarise([r for r in rows if (r["noise"] if r["rate"] else "", r["rate"]) == s]) for s in settings}
    first = next(r for r in rows if r["rate"] is not None) if any(r["rate"] is not None for r in rows) else rows[0]
    header = (f"`supervised` {BACKBONE}, {first['epochs']} epochs, batch {first['batch_size']}, the supervised "
              f"recipe with a 1-epoch warm-up, on `{first['in_domain']}`'s training split (each seed is both the "
              f"training and the noise seed); linear probe (L-BFGS, L2 by validation, seed 0) on clean labels: "
              f"in-domain `{first['in_domain']}`, out-of-domain `{first['out_of_domain']}`; mean ± sample std over "
              "seeds. 2 shared CPU cores. Produced by `python bench/label_noise_pretraining.py --render`.\n\n")
    nmtune_header = ("The same frozen features and clean labels, through the `noisy_labels` protocol's heads (seed 0, "
                     "standardised features, AdamW for 30 epochs of 128): a linear head, NMTune's MLP (D -> 4D -> D) "
                     "without its regularisers, and NMTune (the MLP with the consistency, covariance and "
                     "dominant-singular-value terms). \"vs clean\": against the same head on the clean pre-training. "
                     "Produced by the same command.\n\n")
    text = replace_block(DOC.read_text(), "results", header + "\n".join(linear_table(summary)))
    DOC.write_text(replace_block(text, "nmtune", nmtune_header + "\n".join(nmtune_table(summary))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="", help="comma-separated noise rates in [0, 1); 'random' adds random init")
    parser.add_argument("--noise", choices=["symmetric", "asymmetric"], default="symmetric")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ood-data", type=Path, default=OOD_DATA)
    parser.add_argument("--ood-train", type=int, default=5000)
    parser.add_argument("--ood-test", type=int, default=2000)
    parser.add_argument("--render", action="store_true")
    args = parser.parse_args()
    rates = [None if r == "random" else float(r) for r in args.rates.split(",") if r]
    if rates:
        in_domain = load_source("builtin")
        out_of_domain = limit_source(load_source(f"npz:{args.ood_data}"), args.ood_train, args.ood_test)
        RESULTS.mkdir(parents=True, exist_ok=True)
        for rate in rates:
            path = RESULTS / f"{'random' if rate is None else f'{args.noise}-{rate}'}-seed{args.seed}.json"
            if path.exists():
                continue
            row = measure(rate, args.noise, args, in_domain, out_of_domain)
            path.write_text(json.dumps(row, indent=2))
            print(json.dumps(row), flush=True)
    if args.render or rates:
        render()


if __name__ == "__main__":
    main()
