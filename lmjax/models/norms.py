"""LayerNorm and RMSNorm with a hand-written backward pass (the params of `flax.linen`'s).

Autodiff of LayerNorm keeps the normalised input and the broadcast (rows, 1) → (rows, D)
statistics as separate residuals, and XLA's CPU backend materialises some of those
broadcasts as full (B, L, D) arrays (~5 % of a small Transformer's train step, in copies).
Here the backward recomputes x̂ = (x − μ)·r from x and the per-row μ and r, so both
passes are a few fused elementwise ops and two row reductions:

  dx = r · (g − mean(g) − x̂ · mean(g · x̂)),  g = dy · scale
  dscale = Σ_rows dy · x̂,  dbias = Σ_rows dy

RMSNorm (T5, LLaMA) is the same without centring: μ = 0, r = 1/√(mean(x²) + ε), and the
backward loses the mean(g) term.
"""

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def _stats(x32: jnp.ndarray, epsilon: float, center: bool):
  """Row mean μ (0 without centring) and inverse standard deviation r of float32 x,
  each (..., 1)."""
  mean = jnp.mean(x32, axis=-1, keepdims=True) if center else jnp.zeros_like(x32[..., :1])
  centred = x32 - mean
  var = jnp.mean(centred * centred, axis=-1, keepdims=True)
  return mean, jax.lax.rsqrt(var + epsilon)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def layer_norm_fn(x: jnp.ndarray, scale: jnp.ndarray, bias: Optional[jnp.ndarray],
                  epsilon: float, center: bool = True) -> jnp.ndarray:
  """Normalises the last axis of x and applies scale (and bias), in float32.

  Args:
    x: (..., D) any float dtype.
    scale: (D,) float32.
    bias: (D,) float32, or None for no bias.
    epsilon: added to the variance (the mean square without centring).
    center: subtract the row mean (LayerNorm); False: RMSNorm.

  Returns:
    (..., D) float32.
  """
  return _forward(x, scale, bias, epsilon, center)[0]


def _forward(x, scale, bias, epsilon, center=True):
  x32 = x.astype(jnp.float32)
  mean, r = _stats(x32, epsilon, center)  # (..., 1)
  y = (x32 - mean) * r * scale
  if bias is not None:
    y = y + bias
  return y, (x, mean, r, scale, bias)  # bias only tells the backward whether there is one


def _backward(epsilon, center, residuals, dy):
  del epsilon
  x, mean, r, scale, bias = residuals
  xhat = (x.astype(jnp.float32) - mean) * r  # (..., D), recomputed
  g = dy * scale
  centring = jnp.mean(g, axis=-1, keepdims=True) if center else 0.0
  dx = r * (g - centring - xhat * jnp.mean(g * xhat, axis=-1, keepdims=True))
  rows = tuple(range(dy.ndim - 1))
  dscale = jnp.sum(dy * xhat, axis=rows)
  dbias = None if bias is None else jnp.sum(dy, axis=rows)
  return dx.astype(x.dtype), dscale, dbias


layer_norm_fn.defvjp(_forward, _backward)


class LayerNorm(nn.Module):
  """Drop-in for `nn.LayerNorm` (same 'scale'/'bias' params, epsilon 1e-6) with
  `layer_norm_fn`'s backward; the params are logically named ('embed',). With
  `center=False` and `use_bias=False` it is `nn.RMSNorm` (T5's norm).

  Attributes:
    epsilon: added to the variance.
    dtype: output dtype (statistics and normalisation are float32).
    use_bias: a learned bias (False: scale only, as T5 and nanoGPT's no-bias option).
    center: subtract the row mean (False: RMSNorm).
  """
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32
  use_bias: bool = True
  center: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """Args: x (..., D). Returns (..., D) in `dtype`."""
    d = x.shape[-1]
    scale = self.param('scale', nn.with_logical_partitioning(nn.initializers.ones, ('embed',)),
                       (d,), jnp.float32)
    bias = None
    if self.use_bias:
      bias = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros, ('embed',)),
                        (d,), jnp.float32)
    return layer_norm_fn(x, scale, bias, self.epsilon, self.center).astype(self.dtype)
