"""plmbench: reproduce and extend the ablation studies of pre-trained language models."""

__version__ = "0.1.0"
