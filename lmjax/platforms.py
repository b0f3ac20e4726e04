"""The accelerator platform, and the `config.model` values that 'auto' resolves from it.

Every 'auto' is resolved here and nowhere else: `resolve_dtype` for `config.model.dtype`
and `resolve_attention_impl` for `config.model.attention_impl`. Both read the platform
through `backend()`, the one lookup tests replace.
"""

import jax

# config.model.dtype values.
DTYPES = ('auto', 'float32', 'bfloat16')
# config.model.attention_impl values (lmjax/models/attention.py, attention_impls.py).
ATTENTION_IMPLS = ('auto', 'reference', 'xla', 'cudnn', 'splash')
# The platform each fused kernel needs, as `backend()` names it.
KERNEL_PLATFORMS = {'cudnn': 'gpu', 'splash': 'tpu'}
# What 'auto' picks for attention on CPU: at the benchmark's small train shape 'reference'
# ran 656 ms/step against 690 for 'xla' (medians of 5 interleaved runs; docs/DEVICES.md).
CPU_ATTENTION = 'reference'
# Kernels that take no additive score bias (T5's relative position bias).
NO_BIAS_KERNELS = ('cudnn', 'splash')
# cuDNN flash attention takes 16-bit inputs and head widths that are multiples of 8 up to 128.
CUDNN_DTYPES = ('bfloat16', 'float16')
CUDNN_MAX_HEAD_DIM = 128


def backend() -> str:
  """'cpu', 'gpu' or 'tpu': the platform of JAX's default backend."""
  name = jax.default_backend()
  return 'gpu' if name in ('cuda', 'rocm') else name


def resolve_dtype(name: str) -> str:
  """`config.model.dtype` → 'float32' or 'bfloat16'.

  Args:
    name: 'auto' (bfloat16 activations on TPU/GPU, float32 on CPU; params and optimizer
      state are float32 either way), 'float32' or 'bfloat16'.

  Returns:
    The computation dtype's name.

  Raises:
    ValueError: an unknown name.
  """
  if name not in DTYPES:
    raise ValueError(f'config.model.dtype={name!r}: expected one of {", ".join(map(repr, DTYPES))}')
  if name == 'auto':
    return 'float32' if backend() == 'cpu' else 'bfloat16'
  return name


def resolve_attention_impl(name: str, *, dtype: str = 'float32', head_dim: int = 64,
                           dropout: bool = False, bias: bool = False) -> str:
  """`config.model.attention_impl` → the implementation a full-sequence attention runs.

  'auto' picks by platform: TPU → 'splash' (at any device count: the kernel runs in a
  shard_map over the batch and head axes, `attention_impls.splash_attention`), GPU →
  'cudnn' when the computation dtype is 16-bit and head_dim fits cuDNN (else 'xla'),
  CPU → CPU_ATTENTION.
  Attention-weight dropout runs only in 'reference': 'auto' then picks it. An additive
  score bias (T5's relative positions) runs in 'reference' and 'xla' only: 'auto' then
  picks 'xla' on accelerators and CPU_ATTENTION on CPU.

  Args:
    name: a value of ATTENTION_IMPLS.
    dtype: computation dtype name (already resolved: 'float32' or 'bfloat16').
    head_dim: width of one attention head.
    dropout: attention-weight dropout is active (training with attention_dropout_rate > 0).
    bias: the scores get an additive bias (config.model.position='relative').

  Returns:
    'reference', 'xla', 'cudnn' or 'splash'.

  Raises:
    ValueError: an unknown name, or a kernel that this platform, dtype or dropout rules out
      (the message names config.model.attention_impl and what to set instead).
  """
  if name not in ATTENTION_IMPLS:
    raise ValueError(f'config.model.attention_impl={name!r}: expected one of '
                     f'{", ".join(map(repr, ATTENTION_IMPLS))}')
  platform = backend()
  if name == 'auto':
    if dropout:
      return 'reference'
    if bias:
      return CPU_ATTENTION if platform == 'cpu' else 'xla'
    if platform == 'tpu':  # under a mesh, in a shard_map over the batch (and head) axes
      return 'splash'
    if platform == 'gpu':
      fits = dtype in CUDNN_DTYPES and head_dim % 8 == 0 and head_dim <= CUDNN_MAX_HEAD_DIM
      return 'cudnn' if fits else 'xla'
    return CPU_ATTENTION
  if name in KERNEL_PLATFORMS and platform != KERNEL_PLATFORMS[name]:
    raise ValueError(
        f'config.model.attention_impl={name!r} needs a {KERNEL_PLATFORMS[name].upper()} '
        f'(this process runs on {platform}): use \'auto\', \'xla\' or \'reference\'')
  if name == 'cudnn' and dtype not in CUDNN_DTYPES:
    raise ValueError(f"config.model.attention_impl='cudnn' needs 16-bit inputs, but "
                     f"config.model.dtype is {dtype!r}: set it to 'bfloat16' (or 'auto'), or "
                     "use attention_impl='xla'")
  if bias and name in NO_BIAS_KERNELS:
    raise ValueError(f'config.model.attention_impl={name!r} takes no additive attention bias, '
                     "which config.model.position='relative' (T5) needs: use 'auto', 'xla' or "
                     "'reference'")
  if dropout and name != 'reference':
    raise ValueError(f'config.model.attention_impl={name!r} has no attention-weight dropout: '
                     "set config.model.attention_dropout_rate=0, or attention_impl='reference' "
                     "(or 'auto')")
  return name
