"""Dataset curation (PASS-style): licence filter, zero-shot text exclusion, near-duplicate removal."""

from pretrainlab.curate.curation import CurationConfig, curate_folder

__all__ = ["CurationConfig", "curate_folder"]
