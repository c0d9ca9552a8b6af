"""Augmentation presets of the joint-embedding papers, as `ViewOptions` (immutable, so usable as defaults).

The ImageNet values of each paper; small-image recipes (recipes/*.yaml) turn blur off, as the
CIFAR settings of these methods do (a 28-32 px image has little detail left to blur).
"""

from __future__ import annotations

from pretrainlab.methods.base import ViewOptions

# MoCo v2 (arXiv 2003.04297): crop scale 0.2-1, jitter 0.4/0.4/0.4/0.1 at p 0.8, grayscale 0.2, blur p 0.5.
MOCO_V2_VIEW = ViewOptions(crop_min_scale=0.2, jitter_strength=0.5, blur_p=0.5)

# BYOL (arXiv 2006.07733, table 6), also used by MoCo v3 and DINO: two asymmetric views, the first always
# blurred, the second rarely blurred and sometimes solarised; jitter 0.4/0.4/0.2/0.1 (saturation 0.2, not
# SimCLR's 0.4) at p 0.8.
BYOL_JITTER_SATURATION = 0.2
BYOL_FIRST_VIEW = ViewOptions(crop_min_scale=0.08, jitter_strength=0.5, blur_p=1.0, solarize_p=0.0,
                              saturation=BYOL_JITTER_SATURATION)
BYOL_SECOND_VIEW = ViewOptions(crop_min_scale=0.08, jitter_strength=0.5, blur_p=0.1, solarize_p=0.2,
                               saturation=BYOL_JITTER_SATURATION)

# SimSiam (arXiv 2011.10566): MoCo v2's symmetric augmentation.
SIMSIAM_VIEW = MOCO_V2_VIEW

# DINO (arXiv 2104.14294): global crops cover 40-100 % of the image, local crops 5-40 % (max set by the method);
# BYOL's jitter (0.4/0.4/0.2/0.1) on every view, local ones included.
DINO_FIRST_GLOBAL_VIEW = ViewOptions(crop_min_scale=0.4, jitter_strength=0.5, blur_p=1.0, solarize_p=0.0,
                                     saturation=BYOL_JITTER_SATURATION)
DINO_SECOND_GLOBAL_VIEW = ViewOptions(crop_min_scale=0.4, jitter_strength=0.5, blur_p=0.1, solarize_p=0.2,
                                      saturation=BYOL_JITTER_SATURATION)
DINO_LOCAL_VIEW = ViewOptions(crop_min_scale=0.05, jitter_strength=0.5, blur_p=0.5, solarize_p=0.0,
                              saturation=BYOL_JITTER_SATURATION)
