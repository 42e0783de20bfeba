"""RedSM5 data: reading and validating the sources, splits, post-criterion pairs, tokenized windows,
augmentation, batching and the on-disk feature cache. Imports config, storage and the leaf modules only.
"""
