"""Test session set-up: 8 simulated CPU devices and quick XLA compiles.

Set before jax is imported anywhere, so every test sees 8 devices.
"""

import os
import shutil
import tempfile

os.environ['XLA_FLAGS'] = ' '.join([
    os.environ.get('XLA_FLAGS', ''),
    '--xla_force_host_platform_device_count=8',
    # Tests run tiny shapes: compile time dominates, so skip expensive LLVM passes.
    '--xla_backend_optimization_level=0',
    '--xla_llvm_disable_expensive_passes=true',
    # The older (non-MLIR) fusion emitters compile ~25 % faster (measured: docs/PERF_NOTES.md).
    '--xla_cpu_use_fusion_emitters=false',
]).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

# Many tests (and the CLI tests' subprocesses, which inherit this environment) compile
# the same tiny programs: JAX's persistent compilation cache, one per test session and
# shared by the xdist workers, compiles each once. A cache hit returns the executable
# the first compile produced, so results are unchanged.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='lmjax-test-jax-cache-')
  os.environ['LMJAX_TEST_OWNS_JAX_CACHE'] = '1'
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'


def pytest_unconfigure(config):
  """The session that made the cache (the xdist controller, or a lone run) removes it."""
  del config
  if os.environ.get('LMJAX_TEST_OWNS_JAX_CACHE') and not os.environ.get('PYTEST_XDIST_WORKER'):
    shutil.rmtree(os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)

