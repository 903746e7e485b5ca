from maml_cli.cli import rundir  # noqa: F401  (registers ${maml_unique:} before Hydra composes a config)
