"""dsm5_hpo: storage-optimized training and HPO for DSM-5 criteria matching and evidence binding."""

__version__ = "0.1.0"
