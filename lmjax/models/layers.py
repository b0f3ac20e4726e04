"""Building blocks shared by the model families: embeddings, positions, MLP, masks."""

from functools import partial
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.models import norms
from lmjax.models import dropout_mask

Dtype = Any
PAD_ID = 0
# The one mask value (attention, pooling, CRF): finite, so an all-padding row gives uniform
# weights instead of NaN and exp underflows to 0 without inf - inf.
NEG_INF = -1e9
EOS_ID = 1


def shift_right(targets: jnp.ndarray, segmentation: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """Builds decoder inputs: targets shifted right by one with BOS (= 0) in front.

  Args:
    targets: (B, T) int32 target ids.
    segmentation: optional (B, T) segment ids of packed rows; each segment then
      starts with BOS instead of the previous segment's last token.

  Returns:
    (B, T) int32 decoder inputs.
  """
  shifted = jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]  # (B, T)
  if segmentation is not None:
    prev_seg = jnp.pad(segmentation, ((0, 0), (1, 0)))[:, :-1]
    shifted = jnp.where(segmentation == prev_seg, shifted, 0)
  return shifted


def attention_mask(q_valid: jnp.ndarray, k_valid: jnp.ndarray,
                   q_segment: Optional[jnp.ndarray] = None,
                   k_segment: Optional[jnp.ndarray] = None,
                   causal: bool = False) -> jnp.ndarray:
  """Boolean attention mask from padding, packing segments and causality.

  Args:
    q_valid: (B, Lq) bool, True on real query positions.
    k_valid: (B, Lk) bool, True on real key positions.
    q_segment: optional (B, Lq) segment ids (packed rows).
    k_segment: optional (B, Lk) segment ids.
    causal: if True, query i sees keys j <= i only.

  Returns:
    (B, 1, Lq, Lk) bool mask, broadcastable over heads.
  """
  mask = q_valid[:, :, None] & k_valid[:, None, :]  # (B, Lq, Lk)
  if q_segment is not None:
    mask &= q_segment[:, :, None] == k_segment[:, None, :]
  if causal:
    lq, lk = q_valid.shape[1], k_valid.shape[1]
    mask &= jnp.arange(lq)[:, None] >= jnp.arange(lk)[None, :]
  return mask[:, None]


def sinusoidal_table(max_len: int, dim: int) -> np.ndarray:
  """(max_len, dim) sinusoidal position table of Vaswani et al. (2017)."""
  pos = np.arange(max_len)[:, None]
  div = np.exp(np.arange(0, dim, 2) * -(np.log(10000.0) / dim))
  table = np.zeros((max_len, dim), dtype=np.float32)
  table[:, 0::2] = np.sin(pos * div)
  table[:, 1::2] = np.cos(pos * div)[:, : dim // 2]
  return table


class PositionEmbedding(nn.Module):
  """Adds sinusoidal or learned position embeddings.

  Attributes:
    kind: 'sinusoidal' or 'learned'.
    max_len: largest position + 1.
  """
  kind: str
  max_len: int

  @nn.compact
  def __call__(self, x: jnp.ndarray, positions: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    """Args: x (B, L, D); positions (B, L) int32 or None for 0..L-1. Returns (B, L, D)."""
    d = x.shape[-1]
    if positions is None:
      positions = jnp.arange(x.shape[1])[None, :]
    if self.kind == 'sinusoidal':
      table = jnp.asarray(sinusoidal_table(self.max_len, d))
    elif self.kind == 'learned':
      table = self.param('pos_embedding', nn.with_logical_partitioning(
          nn.initializers.normal(0.02), (None, 'embed')), (self.max_len, d))
    else:
      raise ValueError(f"config.model.position must be 'sinusoidal' or 'learned', got {self.kind!r}")
    return x + jnp.take(table, positions, axis=0).astype(x.dtype)


INIT_STYLES = ('xavier', 'gpt2')
# config.model.embed_scale: whether embedding rows are multiplied by sqrt(D) ('init': when
# config.model.init is 'xavier', as Vaswani et al.; Marian and BART-large scale, T5, GPT-2
# and BERT do not).
EMBED_SCALES = ('init', 'sqrt_dim', 'none')
GPT2_STD = 0.02
LSTM_STD = 0.1  # the LSTM models' embedding entries (Embed init='lstm')


def check_init(style: str) -> None:
  """Raises ValueError naming config.model.init unless `style` is one of INIT_STYLES."""
  if style not in INIT_STYLES:
    raise ValueError(f'config.model.init must be one of {INIT_STYLES}, got {style!r}')


def kernel_init(style: str, residual_layers: int = 0) -> Callable:
  """Initializer of a weight matrix for an init style.

  Args:
    style: 'xavier' (Glorot-uniform, as Vaswani et al. and the flax examples) or
      'gpt2' (N(0, 0.02), as GPT-2 and nanoGPT).
    residual_layers: for a projection that writes into the residual stream of a stack
      of this many layers, 'gpt2' divides the std by sqrt(2 * residual_layers), so the
      stream's variance does not grow with depth (Radford et al. 2019). 0 = no scaling.

  Returns:
    A flax initializer.
  """
  check_init(style)
  if style == 'xavier':
    return nn.initializers.xavier_uniform()
  scale = (2 * residual_layers) ** -0.5 if residual_layers else 1.0
  return nn.initializers.normal(GPT2_STD * scale)


class TypeEmbedding(nn.Module):
  """Adds row 0 of a learned token-type (segment) table: BERT's `token_type_embeddings`,
  which single-segment inputs read at every position. The other rows are kept (a BERT
  checkpoint's table round-trips whole) but no input selects them yet.

  Attributes:
    num_types: table rows (BERT's `type_vocab_size`).
  """
  num_types: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """Args: x (B, L, D). Returns (B, L, D): x plus the type-0 row."""
    table = self.param('embedding', nn.with_logical_partitioning(
        nn.initializers.normal(GPT2_STD), (None, 'embed')), (self.num_types, x.shape[-1]))
    return x + table[0].astype(x.dtype)


class Embed(nn.Module):
  """Token embedding that can also act as the tied output projection.

  Attributes:
    num_embeddings: vocabulary size V.
    features: width D.
    dtype: computation dtype.
    init: 'xavier': entries N(0, D^-1/2), looked-up rows scaled by sqrt(D), so they have
      unit scale, comparable to the position signal added next (Vaswani et al. 2017);
      'gpt2': entries N(0, 0.02), unscaled (GPT-2, nanoGPT); 'lstm': entries N(0, 0.1),
      unscaled (the LSTM models: word, byte and VAE embeddings).
    matmul_dtype: of the tied logits (see `matmul_fn`).
    scale: multiply looked-up rows by sqrt(D): 'init' (as `init` says: only 'xavier'),
      'sqrt_dim' or 'none' (`config.model.embed_scale`, EMBED_SCALES).
  """
  num_embeddings: int
  features: int
  dtype: Dtype = jnp.float32
  init: str = 'xavier'
  matmul_dtype: str = ''
  scale: str = 'init'

  def setup(self):
    if self.init != 'lstm':  # the LSTM models' own style; the others come from config.model.init
      check_init(self.init)
    std = {'xavier': self.features ** -0.5, 'gpt2': GPT2_STD, 'lstm': LSTM_STD}[self.init]
    self.embedding = self.param('embedding', nn.with_logical_partitioning(
        nn.initializers.normal(std), ('vocab', 'embed')), (self.num_embeddings, self.features))

  def __call__(self, ids: jnp.ndarray) -> jnp.ndarray:
    """Args: ids (...) int32. Returns (..., D) embeddings (scaled by sqrt(D) for 'xavier')."""
    emb = lookup(self.embedding, ids).astype(self.dtype)
    if self.scale not in EMBED_SCALES:
      raise ValueError(f'config.model.embed_scale={self.scale!r}: expected one of '
                       f'{", ".join(EMBED_SCALES)}')
    if self.scale == 'none' or (self.scale == 'init' and self.init != 'xavier'):
      return emb
    return emb * jnp.sqrt(self.features).astype(self.dtype)

  def attend(self, x: jnp.ndarray, deterministic: bool = False) -> jnp.ndarray:
    """Tied logits (..., V) of x (..., D). `deterministic` (no gradient: eval, decoding): a
    plain contraction with the (V, D) table, whose weight qwix sees and can quantize per
    row; else `tied_logits` and its faster backward pass."""
    if matmul_fn(self.matmul_dtype) is not None:
      return bf16_dot_general(x, self.embedding.T, (((x.ndim - 1,), (0,)), ((), ())))
    if deterministic:  # promote_dtype (as nn.Dense) leaves a qwix int8 table as it is
      x, table = nn.dtypes.promote_dtype(x, self.embedding, dtype=self.dtype)
      return jax.lax.dot_general(x, table, (((x.ndim - 1,), (1,)), ((), ())))
    return tied_logits(x, self.embedding.astype(self.dtype))


def lookup(table, ids: jnp.ndarray) -> jnp.ndarray:
  """Rows `ids` of an embedding table (V, D) → (..., D).

  Under qwix post-training quantization (lmjax.models.quantization) a table that also
  feeds the tied logits is an int8 array with one scale per row: its rows are
  gathered in int8 and then dequantized.
  """
  if isinstance(table, (jax.Array, np.ndarray)):  # (host parameters too, as the tools pass)
    return jnp.take(table, ids, axis=0)
  import qwix  # pylint: disable=g-import-not-at-top  (only quantized models get here)
  def rows(x):  # the int8 rows and their scales (a scale of one row serves them all)
    if x.shape[0] == table.shape[0]:
      return jnp.take(x, ids, axis=0)
    return x.reshape((1,) * jnp.ndim(ids) + x.shape[1:])
  return qwix.dequantize(jax.tree.map(rows, table.array))


@jax.custom_vjp
def tied_logits(x: jnp.ndarray, embedding: jnp.ndarray) -> jnp.ndarray:
  """x (..., D) @ embedding (V, D).T → (..., V), with a layout-friendly backward pass.

  Autodiff would form d(embedding) = dlogits.T @ x, for which XLA:CPU materialises
  the (V, N) transpose of the largest tensor of the model (64 MB for N = 2048 tokens,
  V = 8000); the backward below contracts over N with dlogits in its natural layout
  and transposes only the (D, V) result. Same values, ~40 % less time in the logits.
  """
  return jnp.dot(x, embedding.T)


def _tied_logits_fwd(x, embedding):
  return jnp.dot(x, embedding.T), (x, embedding)


def _tied_logits_bwd(residuals, g):
  x, embedding = residuals
  x2 = x.reshape(-1, x.shape[-1])  # (N, D)
  g2 = g.reshape(-1, g.shape[-1])  # (N, V)
  d_embedding = jnp.dot(x2.T, g2).T  # (V, D)
  return jnp.dot(g, embedding).astype(x.dtype), d_embedding.astype(embedding.dtype)


tied_logits.defvjp(_tied_logits_fwd, _tied_logits_bwd)


def dense(features, names, dtype, name=None, use_bias=True,
          init: Callable = nn.initializers.xavier_uniform(), dot_general=None):
  """nn.Dense with logically named kernel and bias (`dot_general`: see `matmul_fn`)."""
  return nn.Dense(features, dtype=dtype, use_bias=use_bias, name=name, dot_general=dot_general,
                  kernel_init=nn.with_logical_partitioning(init, names),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, names[-1:]))


MATMUL_DTYPES = ('', 'float32', 'bfloat16')


def matmul_fn(matmul_dtype: str) -> Optional[Callable]:
  """The `dot_general` for Dense layers under `config.model.matmul_dtype`.

  Args:
    matmul_dtype: '' or 'float32' (None: lax.dot_general in the layer's dtype), or
      'bfloat16' (`bf16_dot_general`).

  Returns:
    None or a dot_general-compatible function.
  """
  if matmul_dtype not in MATMUL_DTYPES:
    raise ValueError(f'config.model.matmul_dtype must be one of {MATMUL_DTYPES}, got {matmul_dtype!r}')
  return bf16_dot_general if matmul_dtype == 'bfloat16' else None


def bf16_dot_general(x, w, dimension_numbers, precision=None, preferred_element_type=None):
  """A Dense/DenseGeneral contraction with bfloat16 operands and a float32 result.

  Mixed precision as on TPUs: inputs and kernel are rounded to bfloat16, products are
  accumulated in float32, and the backward pass does the same for both of its matmuls.
  CPUs with AVX-512 BF16 (or AMX) run such a matmul about twice as fast as a float32 one,
  but only when the result is float32 (a bfloat16 result takes a slower path).

  Args:
    x: (..., K1..Kn) inputs; the contracted axes are its last n.
    w: (K1..Kn, N...) kernel; the contracted axes are its first n.
    dimension_numbers: lax.dot_general dimension numbers of that form (no batch axes).
    precision: ignored (kept for the dot_general signature).
    preferred_element_type: ignored; the result is float32.

  Returns:
    (..., N...) float32.
  """
  del precision, preferred_element_type
  (cx, cw), (bx, bw) = dimension_numbers
  n = len(cx)
  if bx or bw or tuple(cx) != tuple(range(x.ndim - n, x.ndim)) or tuple(cw) != tuple(range(n)):
    raise ValueError(f'bf16_dot_general contracts trailing input axes with leading kernel axes; '
                     f'got dimension_numbers {dimension_numbers}')
  k = int(np.prod(w.shape[:n]))
  out = _bf16_matmul(x.reshape(-1, k), w.reshape(k, -1))  # (M, N)
  return out.reshape(x.shape[:x.ndim - n] + w.shape[n:])


def _mm(a, b, contract):
  return jax.lax.dot_general(a, b, (contract, ((), ())), preferred_element_type=jnp.float32)


@jax.custom_vjp
def _bf16_matmul(x, w):
  return _mm(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), ((1,), (0,)))


def _bf16_matmul_fwd(x, w):
  xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
  # Zero-size arrays carry the primal dtypes, which the cotangents must have.
  return _mm(xb, wb, ((1,), (0,))), (xb, wb, jnp.zeros((0,), x.dtype), jnp.zeros((0,), w.dtype))


def _bf16_matmul_bwd(residuals, g):
  xb, wb, x_dtype, w_dtype = residuals
  gb = g.astype(jnp.bfloat16)  # (M, N)
  dx = _mm(gb, wb, ((1,), (1,)))  # (M, K)
  dw = _mm(xb, gb, ((0,), (0,)))  # (K, N)
  return dx.astype(x_dtype.dtype), dw.astype(w_dtype.dtype)


_bf16_matmul.defvjp(_bf16_matmul_fwd, _bf16_matmul_bwd)


class Dropout(nn.Module):
  """nn.Dropout with the fused, sharding-invariant `dropout_mask.keep_mask`; same interface.

  Attributes:
    rate: drop probability.
  """
  rate: float

  @nn.compact
  def __call__(self, x: jnp.ndarray, deterministic: bool) -> jnp.ndarray:
    """Args: x any shape; deterministic: identity when True. Returns x masked and rescaled."""
    if deterministic or self.rate == 0.0:
      return x
    keep = dropout_mask.keep_mask(self.make_rng('dropout'), x.shape, self.rate)
    return jnp.where(keep, x * (1.0 / (1.0 - self.rate)), 0.0).astype(x.dtype)


class _FlatInitPartitioned(nn.LogicallyPartitioned):
  """Logical names of a `nn.DenseGeneral` kernel or bias with several feature axes: flax
  draws it flat and reshapes it to the names' rank, so a flat draw is unboxed without the
  sharding constraint (under live rules it would not fit); the reshaped one gets it."""

  def unbox(self, apply_constraint=True):
    if jnp.ndim(self.value) != len(self.names):
      return self.value
    return super().unbox(apply_constraint)


def dense_general_partitioning(init, names: Sequence[Optional[str]]):
  """`nn.with_logical_partitioning` for `nn.DenseGeneral` parameters (`_FlatInitPartitioned`)."""
  def boxed(*args, **kwargs):
    return _FlatInitPartitioned(init(*args, **kwargs), tuple(names))
  return boxed


# 'gelu' is the exact (erf) form, as torch.nn.GELU / nanoGPT / BERT; 'gelu_tanh' the
# approximation (GPT-2's gelu_new); 'silu' = swish (Marian). 'gated_X' is a gated linear
# unit: X(x W_0) * (x W_1) (Shazeer 2020; T5 v1.1 and mT5 use 'gated_gelu_tanh').
_PLAIN_ACTIVATIONS = {'relu': nn.relu, 'gelu': partial(nn.gelu, approximate=False),
                      'gelu_tanh': partial(nn.gelu, approximate=True), 'silu': nn.silu}
ACTIVATIONS = {**_PLAIN_ACTIVATIONS, **{f'gated_{k}': v for k, v in _PLAIN_ACTIVATIONS.items()}}


class Mlp(nn.Module):
  """Position-wise feed-forward block: Dense → activation → dropout → Dense.

  A gated activation ('gated_X') has two input projections, `wi_0` (through X) and `wi_1`
  (linear), multiplied elementwise (T5 v1.1's names); the others have one, `wi`.

  Attributes:
    mlp_dim: hidden width F.
    dropout_rate: dropout on the hidden activations.
    dtype: computation dtype.
    activation: a key of ACTIVATIONS.
    init: init style (see `kernel_init`).
    residual_layers: depth of the stack `wo` writes into (see `kernel_init`).
    use_bias: biases on both projections.
    matmul_dtype: see `matmul_fn`.
  """
  mlp_dim: int
  dropout_rate: float
  dtype: Dtype = jnp.float32
  activation: str = 'relu'
  init: str = 'xavier'
  residual_layers: int = 0
  use_bias: bool = True
  matmul_dtype: str = ''

  @nn.compact
  def __call__(self, x: jnp.ndarray, deterministic: bool) -> jnp.ndarray:
    """Args: x (B, L, D). Returns (B, L, D)."""
    d = x.shape[-1]
    dot = matmul_fn(self.matmul_dtype)
    wi = lambda name: dense(self.mlp_dim, ('embed', 'mlp'), self.dtype, name=name,
                            use_bias=self.use_bias, init=kernel_init(self.init),
                            dot_general=dot)(x)  # (B, L, F)
    if self.activation.startswith('gated_'):
      h = ACTIVATIONS[self.activation](wi('wi_0')) * wi('wi_1')
    else:
      h = ACTIVATIONS[self.activation](wi('wi'))
    h = nn.with_logical_constraint(h, ('activation_batch', 'activation_length', 'activation_mlp'))
    h = Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return dense(d, ('mlp', 'embed'), self.dtype, name='wo', use_bias=self.use_bias,
                 init=kernel_init(self.init, self.residual_layers), dot_general=dot)(h)


# config.model.norm: 'layernorm' (mean and variance; Vaswani et al., BERT, GPT-2) or
# 'rmsnorm' (root mean square, scale only; T5, LLaMA).
NORMS = ('layernorm', 'rmsnorm')


def layer_norm(name=None, dtype=jnp.float32, use_bias=True, kind='layernorm', epsilon=1e-6):
  """A norm (`kind`, one of NORMS) with logically named scale and (unless `use_bias` is
  False, or for 'rmsnorm', which has none) bias.

  `norms.LayerNorm`: the params of `nn.LayerNorm` / `nn.RMSNorm`, a fused hand-written backward.

  Raises:
    ValueError: `kind` is not one of NORMS.
  """
  if kind not in NORMS:
    raise ValueError(f'config.model.norm={kind!r}: expected one of {", ".join(NORMS)}')
  rms = kind == 'rmsnorm'
  return norms.LayerNorm(dtype=dtype, name=name, use_bias=use_bias and not rms, center=not rms,
                         epsilon=epsilon)
