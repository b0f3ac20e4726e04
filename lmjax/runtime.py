"""Process start-up: logging, JAX safety switches, multi-host runtime."""

from absl import logging
import jax

from lmjax import parallel


def setup(config) -> None:
  """Configures JAX for a training process.

  Args:
    config: experiment config (reads `config.distributed`).
  """
  # Orbax logs every array write at INFO; keep the console for the progress bar.
  logging.set_verbosity(logging.WARNING)
  # Partitionable threefry: random bits do not depend on how arrays are sharded,
  # so 1 device and N devices draw the same dropout masks.
  jax.config.update('jax_threefry_partitionable', True)
  parallel.maybe_initialize_distributed(config.distributed)
