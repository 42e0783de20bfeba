"""The command-line entry points (`make train`, `status`, `cleanup`, `evaluate`, `predict`, `report`,
`sync`, `dashboard`): parse arguments, compose the config, call one function below, map errors to exit
codes. May import every package; nothing imports it.
"""
