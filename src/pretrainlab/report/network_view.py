"""The page's interactive network view: pick an image, click a stage, hover a map (CNN Explainer style).

The maps come precomputed in RUN/network.json (report/network_snapshot.py); the page's script draws them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pretrainlab.report.html import hint, json_script
from pretrainlab.report.network_snapshot import NETWORK_FILE

log = logging.getLogger(__name__)


def read_snapshot(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / NETWORK_FILE
    if not path.is_file():
        return None
    try:
        snapshot = json.loads(path.read_text())
        valid = (isinstance(snapshot, dict) and isinstance(snapshot.get("stages"), list) and snapshot["stages"]
                 and isinstance(snapshot.get("images"), list) and snapshot["images"]
                 and all(len(image.get("stages", [])) == len(snapshot["stages"]) for image in snapshot["images"]))
    except (ValueError, AttributeError, TypeError):
        valid = False
    if not valid:
        log.warning("%s is not a network snapshot; the page leaves the network view out", path)
        return None
    return snapshot


def network_section(run_dir: Path) -> list[str]:
    parts = ["<h2 id=\"network\">The network, stage by stage</h2>"]
    snapshot = read_snapshot(run_dir)
    if snapshot is None:
        return [*parts, hint(f"no usable {NETWORK_FILE} in this run: run `pretrainlab report {run_dir} --network` to "
                             "fill this (pre-training writes it at the end).")]
    try:
        data = json_script("network-data", snapshot)
    except ValueError:  # NaN or infinity in an old or edited file: JSON.parse would fail in the browser
        return [*parts, hint(f"{NETWORK_FILE} holds values that are not finite: run `pretrainlab report {run_dir} "
                             "--network` to recompute it.")]
    return [*parts,
            '<p class="note">pick an image, click a stage to see its feature maps (the most active channels of that '
            "image, each scaled to its own range), hover a map for its statistics.</p>",
            '<div id="network-view"><div class="net-images"></div><div class="net-stages"></div>'
            '<div class="net-maps"></div><p class="net-stats"></p></div>',
            data]
