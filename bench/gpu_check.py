"""One-GPU check: step overhead, a short CIFAR-10 pre-training with its kNN, the gauntlet's time; one JSON out.

    bash bench/gpu_check.sh [OUT.json]          # or: python -m bench.gpu_check --out OUT.json
    TINY=1 bash bench/gpu_check.sh out.json     # a CPU smoke run with tiny sizes (what the test runs)

Three parts, sized to finish in under 8 minutes on one current GPU:
1. step: the full SimCLR step (uint8 batch in, views on the device, head, NT-Xent, backward, SGD) against the
   bare two-view backbone step, both compiled, bf16, channels_last (bench/ssl_step_vs_bare.py; target
   pretrainlab / bare >= 0.9; an H100 runs the bare compiled ResNet-18 CIFAR-stem step at ~29k images/s at
   batch 512).
2. pretrain: SimCLR on CIFAR-10 (resnet18_cifar, --epochs, batch 512, bf16, compiled), then kNN (k=200 on
   CIFAR's 5,000 images a class) on the test split.
3. gauntlet: every protocol that applies to CIFAR-10, one seed, on a class-balanced subset (--gauntlet-train /
   --gauntlet-test images), timed.
Data: ../shared/data/cifar10_jpeg.npz when present, else torchvision's CIFAR-10 (downloaded into the work folder).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import CIFAR, cifar_images, interleaved_medians, simclr_train_step
from bench.ssl_step_vs_bare import bare_step, synchronized

FULL = {"backbone": "resnet18_cifar", "step_batch": 512, "rounds": 20, "compile": True, "epochs": 10,
        "batch": 512, "max_train": None, "gauntlet_train": 10_000, "gauntlet_test": 2_000, "protocols": None}
TINY = {"backbone": "tinycnn", "step_batch": 16, "rounds": 2, "compile": False, "epochs": 1, "batch": 32,
        "max_train": 256, "gauntlet_train": 200, "gauntlet_test": 100, "protocols": ["knn", "linear"]}


def step_check(sizes: dict[str, Any], device: torch.device, precision: str, work: Path) -> dict[str, Any]:
    images, description = cifar_images(sizes["step_batch"])
    uint8 = torch.from_numpy(images).to(device)
    steps = {
        "bare": synchronized(bare_step(sizes["backbone"], sizes["step_batch"], device,
                                       torch.bfloat16 if precision == "bf16" else None, sizes["compile"]), device),
        "pretrainlab": synchronized(simclr_train_step(sizes["backbone"], uint8, work / "step", precision,
                                                      sizes["compile"]), device),
    }
    medians = interleaved_medians(steps, sizes["rounds"], warmup=5 if sizes["compile"] else 2)
    rates = {name: sizes["step_batch"] / seconds for name, seconds in medians.items()}
    return {"data": description, "backbone": sizes["backbone"], "batch": sizes["step_batch"], "precision": precision,
            "compile": sizes["compile"], "rounds": sizes["rounds"], "bare_images_per_second": rates["bare"],
            "pretrainlab_images_per_second": rates["pretrainlab"], "ratio": rates["pretrainlab"] / rates["bare"]}


def pretrain_check(sizes: dict[str, Any], data: str, device: str, precision: str, work: Path,
                   download: bool) -> dict[str, Any]:
    from pretrainlab.pipeline import build_run_config, evaluate_backbone, pretrain

    overrides = {"backbone": sizes["backbone"], "data": data, "out": str(work / "simclr"), "download": download,
                 "max_train": sizes["max_train"]}
    train = {"epochs": sizes["epochs"], "batch_size": sizes["batch"], "precision": precision,
             "compile": sizes["compile"], "device": device, "warmup_epochs": min(1, sizes["epochs"]),
             "knn_every": 0}
    started = time.perf_counter()
    summary = pretrain(build_run_config("simclr", overrides, train, {}), show_progress=False)
    seconds = time.perf_counter() - started
    knn = evaluate_backbone(str(work / "simclr"), data, ["knn"], device=device, download=download)[0]
    return {"method": "simclr", "backbone": sizes["backbone"], "epochs": sizes["epochs"], "batch": sizes["batch"],
            "max_train": sizes["max_train"], "seconds": seconds, "steps": summary["steps"],
            "images_per_second": summary["images_per_second"], "knn_top1": knn.value, "knn_settings": knn.settings}


def gauntlet_check(sizes: dict[str, Any], data: str, device: str, work: Path, download: bool) -> dict[str, Any]:
    from pretrainlab.pipeline import gauntlet

    started = time.perf_counter()
    outcome = gauntlet(str(work / "simclr"), data, sizes["protocols"], seeds=1, store=work / "store.db",
                       device=device, download=download, keep_going=True, max_train=sizes["gauntlet_train"],
                       max_test=sizes["gauntlet_test"])
    return {"seconds": time.perf_counter() - started, "max_train": sizes["gauntlet_train"],
            "max_test": sizes["gauntlet_test"], "results": {f"{r.protocol} {r.metric}": r.value
                                                           for r in outcome.summary()},
            "skipped": outcome.skipped, "failed": outcome.failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--tiny", action="store_true", help="CPU-sized smoke run (tinycnn, a few hundred images)")
    parser.add_argument("--data", help="dataset spec (default: the CIFAR-10 JPEG npz, else torchvision:CIFAR10)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", type=Path, help="folder for the run, the store and downloads (default: a temp dir)")
    parser.add_argument("--epochs", type=int, help="pre-training epochs (default 10; tiny 1)")
    args = parser.parse_args()
    sizes = dict(TINY if args.tiny else FULL)
    sizes["epochs"] = args.epochs or sizes["epochs"]
    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    device, precision = ("cuda", "bf16") if cuda else ("cpu", "fp32")
    if cuda:
        torch.backends.cudnn.benchmark = True
    work = args.work or Path(tempfile.mkdtemp(prefix="pretrainlab-gpu-check-"))
    data = args.data or (f"npz:{CIFAR}" if CIFAR.exists() else f"torchvision:CIFAR10:{work / 'cifar10'}")
    download = data.startswith("torchvision:")
    started = time.perf_counter()
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu", "torch": torch.__version__,
        "data": data, "tiny": args.tiny, "work": str(work)}
    report["step"] = step_check(sizes, torch.device(device), precision, work)
    print(f"step: pretrainlab {report['step']['pretrainlab_images_per_second']:.0f} images/s, bare "
          f"{report['step']['bare_images_per_second']:.0f}, ratio {report['step']['ratio']:.2f}", flush=True)
    report["pretrain"] = pretrain_check(sizes, data, device, precision, work, download)
    print(f"pretrain: {report['pretrain']['seconds']:.0f} s, kNN top-1 {report['pretrain']['knn_top1']:.2f} %",
          flush=True)
    report["gauntlet"] = gauntlet_check(sizes, data, device, work, download)
    print(f"gauntlet: {report['gauntlet']['seconds']:.0f} s, {len(report['gauntlet']['results'])} results", flush=True)
    report["total_seconds"] = time.perf_counter() - started
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {args.out} ({report['total_seconds']:.0f} s in all)")


if __name__ == "__main__":
    main()
