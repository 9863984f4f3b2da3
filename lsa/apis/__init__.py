"""What lsa's command-line tools (``tools/``, ``demo/``) are built from.

- :mod:`lsa.apis.runner_config`: config edits behind ``train.py``/``test.py`` (``--eval``,
  ``--resume``, CPU distributed, AMP, visualization, atomic checkpoints).
- :mod:`lsa.apis.checkpoint_loading`: checkpoint loading that runs no code from the file.
- :mod:`lsa.apis.checkpoint_coverage`: refuse a checkpoint that leaves weights unloaded.
- :mod:`lsa.apis.inference`: an inference model from a config and a checkpoint (demo scripts).
- :mod:`lsa.apis.preflight`: datasets, schedule, demo knobs and process count, checked first.

Import the submodules directly; this package imports nothing at import time.
"""
