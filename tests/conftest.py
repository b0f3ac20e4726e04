"""Test session set-up: 8 simulated CPU devices and quick XLA compiles.

Set before jax is imported anywhere, so every test sees 8 devices.
"""

import os

os.environ['XLA_FLAGS'] = ' '.join([
    os.environ.get('XLA_FLAGS', ''),
    '--xla_force_host_platform_device_count=8',
    # Tests run tiny shapes: compile time dominates, so skip expensive LLVM passes.
    '--xla_backend_optimization_level=0',
    '--xla_llvm_disable_expensive_passes=true',
]).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
