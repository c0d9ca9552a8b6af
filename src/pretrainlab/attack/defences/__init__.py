"""Defences, each measured under an attack that knows it (adaptive attacks).

- `adversarial_training.py`: PGD adversarial fine-tuning and TRADES, exported as a run folder.
- `raw_isp.py`: RGB -> simulated Bayer RAW with sensor noise -> a small ISP trained on clean images -> RGB.
- `fusion.py`: the features of two backbones trained on different data, fused under one probe.
"""

from __future__ import annotations

from pretrainlab.errors import PretrainlabError, unknown_name_message

DEFENCES = ("none", "adv_finetune", "raw_isp", "fusion")


def parse_defence(text: str) -> tuple[str, str | None]:
    """'none', 'adv_finetune', 'raw_isp' or 'fusion:RUN2' -> (kind, argument)."""
    kind, _, argument = text.strip().partition(":")
    if kind not in DEFENCES:
        raise PretrainlabError(unknown_name_message("defence", kind, DEFENCES))
    if kind == "fusion" and not argument:
        raise PretrainlabError("defence 'fusion' needs a second backbone: fusion:RUN2 (a run folder or timm:NAME)")
    if kind != "fusion" and argument:
        raise PretrainlabError(f"defence '{kind}' takes no argument, got '{text}'")
    return kind, argument or None
