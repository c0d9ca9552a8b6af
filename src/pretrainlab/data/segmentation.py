"""`seg:PATH`: images with per-pixel class masks, for the dense probe.

Layout, one split (a fixed random 20 % test split is then made):

    PATH/images/NAME.png|jpg|...   PATH/masks/NAME.png   [PATH/classes.txt]

or given splits: PATH/train/{images,masks}/ and PATH/test/{images,masks}/. A mask is a single-channel
PNG (mode L, P, 1 or I) of the same size as its image whose pixel values are class ids; 255 marks pixels
to ignore. `classes.txt`, one name per line, names id 0, 1, ... in order. Images are resized so their
shorter side is `image_size` (default 64) and centre-cropped, bilinearly; masks get the same geometry
with nearest-neighbour resampling, so every pixel keeps an id that exists.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pretrainlab.data.folder import DEFAULT_DECODE_SIZE, IMAGE_SUFFIXES, is_grayscale
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.errors import PretrainlabError

IGNORE_INDEX = 255
MASK_MODES = ("L", "P", "1", "I", "I;16")
LAYOUT = "PATH/images/* with PATH/masks/<same name>.png, or PATH/train/{images,masks} and PATH/test/{images,masks}"


def find_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(image, mask) paths of `folder`/images and `folder`/masks, matched by file name without suffix."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise PretrainlabError(f"segmentation data needs {images_dir} and {masks_dir}; layout: {LAYOUT}")
    images = sorted(f for f in images_dir.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise PretrainlabError(f"no images in {images_dir} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    masks = {f.stem: f for f in masks_dir.iterdir() if f.is_file() and f.suffix.lower() == ".png"}
    for image in images:
        if image.stem not in masks:
            raise PretrainlabError(f"image {image} has no mask {masks_dir / (image.stem + '.png')}; "
                                   "every image needs a mask PNG of the same name")
    orphans = sorted(set(masks) - {image.stem for image in images})
    if orphans:
        raise PretrainlabError(f"mask {masks[orphans[0]]} has no image of the same name in {images_dir}")
    return [(image, masks[image.stem]) for image in images]


def resize_and_crop(image: Image.Image, size: int, resample: Image.Resampling) -> np.ndarray:
    """Shorter side to `size`, then the centre square: (size, size[, C]) uint8."""
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    image = image.resize(new_size, resample, reducing_gap=None)
    left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def read_mask(mask_path: Path, image_size: tuple[int, int]) -> Image.Image:
    """The mask as a mode-L image of class ids, checked against its image's (width, height)."""
    with Image.open(mask_path) as mask:
        if mask.mode not in MASK_MODES:
            raise PretrainlabError(f"mask {mask_path} has mode {mask.mode}; a mask must be a single-channel PNG "
                                   f"of class ids (mode {', '.join(MASK_MODES)})")
        if mask.size != image_size:
            raise PretrainlabError(f"mask {mask_path} is {mask.size[0]}x{mask.size[1]} but its image is "
                                   f"{image_size[0]}x{image_size[1]}; a mask must match its image's size")
        ids = np.asarray(mask).astype(np.int64)  # (H, W); mode 1 gives booleans, I gives int32
    if ids.size and (ids.min() < 0 or ids.max() > IGNORE_INDEX):
        bad = ids.max() if ids.max() > IGNORE_INDEX else ids.min()
        raise PretrainlabError(f"mask {mask_path} holds class id {int(bad)}; ids must be 0..254 "
                               f"({IGNORE_INDEX} = ignore)")
    return Image.fromarray(ids.astype(np.uint8), mode="L")  # palette (P) masks: the indices are the ids


def load_pair(image_path: Path, mask_path: Path, size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(image (size, size, C), mask (size, size)) uint8; unreadable or mismatched files raise."""
    try:
        with Image.open(image_path) as image:
            mask = read_mask(mask_path, image.size)
            pixels = resize_and_crop(image.convert(mode), size, Image.Resampling.BILINEAR)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise PretrainlabError(f"cannot read {image_path} or its mask {mask_path}: {error}") from None
    ids = resize_and_crop(mask, size, Image.Resampling.NEAREST)
    return (pixels[..., None] if pixels.ndim == 2 else pixels), ids


def load_split(folder: Path, size: int, mode: str) -> ImageSet:
    pairs = find_pairs(folder)
    with ThreadPoolExecutor() as pool:  # PIL releases the GIL while decoding; map re-raises the first error in order
        decoded = list(pool.map(lambda pair: load_pair(*pair, size, mode), pairs))
    return ImageSet(np.stack([image for image, _ in decoded]), masks=np.stack([mask for _, mask in decoded]))


def read_class_names(root: Path) -> list[str] | None:
    names_file = root / "classes.txt"
    if not names_file.is_file():
        return None
    names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    if not names:
        raise PretrainlabError(f"{names_file} is empty; write one class name per line (line i names id i)")
    return names


def check_ids(split: ImageSet, names: list[str] | None, root: Path) -> None:
    if names is None:
        return
    ids = np.unique(split.masks)
    too_large = ids[(ids >= len(names)) & (ids != IGNORE_INDEX)]
    if len(too_large):
        raise PretrainlabError(f"masks in {root} hold class id {int(too_large[0])} but classes.txt names only "
                               f"{len(names)} classes (ids 0..{len(names) - 1})")


def load_segmentation(argument: str, image_size: int | None = None, **_: object) -> ImageSource:
    root = Path(argument).expanduser()
    if not root.is_dir():
        raise PretrainlabError(f"segmentation folder not found: {root}; layout: {LAYOUT}")
    split_folders = [root / "train", root / "test"] if (root / "train").is_dir() else [root]
    all_images = [f for folder in split_folders if (folder / "images").is_dir()
                  for f in (folder / "images").iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    mode = "L" if all(is_grayscale(f) for f in all_images) else "RGB"
    size = image_size or DEFAULT_DECODE_SIZE
    splits = [load_split(folder, size, mode) for folder in split_folders]
    names = read_class_names(root)
    for split in splits:
        check_ids(split, names, root)
    test = splits[1] if len(splits) > 1 else None
    return ImageSource(f"seg:{root}", splits[0], test, mask_classes=names)
