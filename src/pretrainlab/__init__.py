"""pretrainlab: pre-train, evaluate, explain, attack and compare vision backbones."""

__version__ = "0.1.0"
