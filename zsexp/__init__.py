"""zsexp: hyperparameter search and experiment tracking for zero-shot cross-modal GANs."""

__version__ = "0.1.0"
