"""Using an exported model on new posts (`predict`): reading posts, batching them through
evaluation.prediction. Imports evaluation, models, data and below; never the training loop.
"""
