"""Storage-efficient token datasets (SeiT, arXiv 2303.11114; SeiT++, arXiv 2312.10105).

A small VQ-VAE turns every image into a grid of codebook indices; the dataset is stored as those grids
(uint8 for up to 256 codes, uint16 beyond) with the labels and the tokenizer's weights, so codes can be
decoded back to pixels. `tokens:PATH` feeds such a file to token-input backbones (backbones/token_vit.py).

- `vq.py`: the VQ-VAE (EMA codebook, straight-through gradients).
- `training.py`: trains the tokenizer and TokenAdapt on a source's images, encodes the splits.
- `adapt.py`: TokenAdapt (spatial augmentation through a learned feature space) and ColorAdapt.
- `token_file.py`: the file format, its checks and the `tokens:` data kind.
- `storage.py`: bytes per image of token grids, pixels and JPEG files.
"""
