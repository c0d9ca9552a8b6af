"""Attacks and defences on any backbone: robust accuracy, universal and feature-space attacks, fooling images.

Rooms:
- `model.py`: what is attacked (pixels in [0, 1] -> defence -> normalisation -> backbone -> head -> logits);
- `input_space.py` (torchattacks by name), `robustness.py` (robust accuracy per eps), `evaluation.py` (records,
  grids);
- `universal.py` + `universal_heads.py` (AdvEncoder), `feature_space.py`, `fooling.py` + `cppn.py`;
- `defences/`: adversarial fine-tuning, the RAW pipeline, contextual fusion;
- `plan.py`, `defended.py`, `encoder_attacks.py`, `pipeline.py`: the `pretrainlab attack` entry point;
- `figures.py`: PNG grids.
"""
