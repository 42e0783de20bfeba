"""The model: the shared encoder (loading, tiny test encoders), the criteria and evidence heads,
losses, device and precision resolution, and the export/load of best_model/. Imports config,
checkpointing, storage and the leaf modules.
"""
