"""Checkpoints: the manager (atomic, SHA-256 verified saves and loads), the file I/O, metadata and
verification, the training state, the pure retention decisions, pruning, study-wide retention, and the
size estimate the disk guard reserves. Imports config, storage and the leaf modules.
"""
