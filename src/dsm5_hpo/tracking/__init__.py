"""Experiment tracking that never loses a metric: the MLflow run tracker, the on-disk outbox that
buffers every write, and the background sender that drains it. Imports config, storage and the leaf
modules.
"""
