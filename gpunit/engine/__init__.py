"""The engine: everything a method's trainer should not write again. It imports no method.

- ``trainer.py``: the base class of every trainer (networks, optimisers, loaders, EMA, precision, accumulation,
  device moves, checkpoint state); ``loop.py``: the training loop (logging, NaN watch, checkpoints, signals,
  exact resume); ``run.py``: a whole run (run folder, seeds, device) and the demos' reuse of finished runs.
- ``config.py``: the YAML config loader and the settings every trainer shares (``TrainConfig``).
- ``checkpoints.py``: atomic, checksummed saves, verified reads, strict loading, a run's checkpoint files;
  ``lock.py``: one process per run folder.
- ``speed.py`` (precision, channels_last, compile), ``precision_probe.py`` (``auto`` chosen by timing the run's
  step, cached per machine), ``flops.py`` (FLOPs per step and the device's peak), ``accumulate.py``, ``distributed.py``, ``optim.py``,
  ``rng.py``, ``device.py``, ``logger.py``, ``progress.py``, ``pretrained.py`` (weights files found offline),
  ``cli.py`` (logging set-up and one clear line for a user's error).
"""
