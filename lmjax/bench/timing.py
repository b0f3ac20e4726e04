"""Timing helpers: ahead-of-time compile timing, median call time, matmul ceiling, peak RSS."""

import dataclasses
import functools
import resource
import statistics
import sys
import time
from typing import Any, Callable, List, Optional, Tuple

import jax
import jax.numpy as jnp

# Matmul precisions of the benchmark rows and ceilings (operand dtype; results are float32).
PRECISIONS = ('float32', 'bfloat16')


@dataclasses.dataclass
class Timing:
  """Times of repeated calls after warm-up.

  Attributes:
    times: seconds of each timed call.
    compile_s: seconds to lower and compile (None for eager code).
  """
  times: List[float]
  compile_s: Optional[float] = None

  @property
  def median(self) -> float:
    return statistics.median(self.times)


def compile_timed(jitted, *args) -> Tuple[Any, float]:
  """Lowers and compiles `jitted` for `args`.

  Args:
    jitted: a `jax.jit` function.
    *args: example arguments (not consumed: donation happens only when called).

  Returns:
    (compiled executable, seconds it took).
  """
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - start


def time_calls(call: Callable[[], Any], steps: int, warmup: int) -> List[float]:
  """Calls `call` `warmup` times, then times `steps` calls, each to completion.

  Args:
    call: runs one step and returns its outputs (blocked on with block_until_ready,
      so asynchronous dispatch is timed to the end of the computation).
    steps: timed calls.
    warmup: untimed calls first (allocations, caches, thread pools).

  Returns:
    Seconds of each timed call.
  """
  for _ in range(warmup):
    jax.block_until_ready(call())
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return times


def matmul_ceiling(size: int = 2048, repeats: int = 10, precision: str = 'float32') -> float:
  """GFLOP/s of a jitted size×size `jnp.dot` (median of `repeats` calls).

  The MFU denominator: what this machine's XLA reaches on one large matmul, 2·n³ FLOPs.

  Args:
    size: matrix side n.
    repeats: timed calls (after one warm-up call).
    precision: 'float32', or 'bfloat16' for bfloat16 operands with a float32 result
      (the matmuls of `model.matmul_dtype='bfloat16'`).

  Returns:
    GFLOP/s.
  """
  if precision not in PRECISIONS:
    raise ValueError(f'precision {precision!r}: expected one of {", ".join(PRECISIONS)}')
  keys = jax.random.split(jax.random.key(0))
  a = jax.random.normal(keys[0], (size, size), jnp.float32).astype(precision)  # (n, n)
  b = jax.random.normal(keys[1], (size, size), jnp.float32).astype(precision)  # (n, n)
  dot = jax.jit(functools.partial(jnp.dot, preferred_element_type=jnp.float32))
  times = time_calls(lambda: dot(a, b), repeats, warmup=1)
  return 2 * size ** 3 / statistics.median(times) / 1e9


def peak_rss_mb() -> float:
  """Peak resident memory of this process so far, MB (ru_maxrss; monotone over a run)."""
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss / 2 ** 20 if sys.platform == 'darwin' else rss / 2 ** 10  # bytes on macOS, KB on Linux
