"""The training loop: optimizer and schedule, the epoch loop with mixed precision, gradient
accumulation and resumable checkpoints. Imports evaluation (per-epoch validation), models, data,
checkpointing, tracking and below.
"""
