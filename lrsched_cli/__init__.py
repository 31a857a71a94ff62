"""lrsched: compare PyTorch learning-rate schedulers on small models."""

__version__ = "0.1.0"
