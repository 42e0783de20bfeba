"""The Optuna study: search space, sampling, the trial objective and runner, workers on a shared
storage, heartbeats, the study lock, preflight, the test evaluation, summary, plots and cleanup. Imports
training, evaluation and everything below; imported by cli only.
"""
