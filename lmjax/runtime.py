"""Process start-up: logging, JAX safety switches, compilation cache, multi-host runtime."""


from absl import logging
import jax

from lmjax import fileio
from lmjax import parallel


def setup(config) -> None:
  """Configures JAX for a training process.

  Args:
    config: experiment config (reads `config.compilation_cache_dir`, `config.distributed`).
  """
  # Orbax logs every array write at INFO; keep the console for the progress bar.
  logging.set_verbosity(logging.WARNING)
  # Partitionable threefry: random bits do not depend on how arrays are sharded,
  # so 1 device and N devices draw the same dropout masks.
  jax.config.update('jax_threefry_partitionable', True)
  if config.compilation_cache_dir:
    # Persistent cache: a rerun of the same program loads its executables instead of
    # compiling (JAX caches those that took >= jax_persistent_cache_min_compile_time_secs).
    jax.config.update('jax_compilation_cache_dir', fileio.resolve(config.compilation_cache_dir))
  parallel.maybe_initialize_distributed(config.distributed)
