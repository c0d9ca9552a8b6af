"""Dataset sources, the uint8 image cache, batched views and mask generators."""

from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.data.spec import DATA_KINDS, describe_data_kinds, load_source

__all__ = ["DATA_KINDS", "ImageSet", "ImageSource", "describe_data_kinds", "load_source"]
