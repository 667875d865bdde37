"""softlabels: run a teacher once, keep its logits in a trustworthy HDF5 cache (docs/FORMAT.md)."""
__version__ = "0.1.0"
