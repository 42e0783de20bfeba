"""Metrics and predictions: the evaluator (criteria and evidence metrics), decoding of model
outputs into answers, threshold tuning, and batched prediction on a split. Imports models, data, config
and below; used by training (validation), hpo (the test evaluation) and inference.
"""
