"""Fused attention kernels behind `config.model.attention_impl` and the mask they share.

The model describes a mask by what it is made of (`AttentionMask`: padding, packed
segments, causality) rather than as a dense (B, 1, Lq, Lk) array, so that each kernel
can take the form it is fast with:

  reference  the dense mask (lmjax.models.attention.dot_product_attention)
  xla        `jax.nn.dot_product_attention(implementation='xla')` with the dense mask
  cudnn      `jax.nn.dot_product_attention(implementation='cudnn')`: cuDNN flash attention;
             padding as sequence lengths and `is_causal` (no mask tensor), packed rows as
             a dense mask (turned into an additive bias by JAX)
  splash     the Pallas TPU splash-attention kernel: `CausalMask`/`FullMask` plus
             segment ids, sequence lengths padded to multiples of 128

Outputs on real (non-padding) query positions are the same on every path; rows of
padding queries, which nothing downstream reads, may differ (see `fused_attention`).
"""

from typing import Optional

from flax import struct
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from lmjax.models import layers

SPLASH_BLOCK = 128  # sequence lengths are padded to this for the splash kernel


@struct.dataclass
class AttentionMask:
  """Which keys each query attends to, as padding, packed segments and causality.

  Attributes:
    q_valid: (B, Lq) bool, True on real query positions.
    kv_valid: (B, Lk) bool, True on real key positions. In unpacked rows the padding
      follows the real tokens (the batch contract), which the 'cudnn' path relies on.
    q_segment: (B, Lq) int segment ids of packed rows (1, 2, …; 0 = padding), or None.
    kv_segment: (B, Lk) segment ids, or None (both set or both None).
    causal: query i sees keys j <= i only (static).
  """
  q_valid: jnp.ndarray
  kv_valid: jnp.ndarray
  q_segment: Optional[jnp.ndarray] = None
  kv_segment: Optional[jnp.ndarray] = None
  causal: bool = struct.field(pytree_node=False, default=False)

  def dense(self) -> jnp.ndarray:
    """(B, 1, Lq, Lk) bool: the mask the reference path applies."""
    return layers.attention_mask(self.q_valid, self.kv_valid, self.q_segment, self.kv_segment,
                                 causal=self.causal)


def dense_or_none(mask: Optional[AttentionMask]) -> Optional[jnp.ndarray]:
  """`mask.dense()`, or None for no mask."""
  return None if mask is None else mask.dense()


def cudnn_arguments(mask: Optional[AttentionMask]) -> dict:
  """The masking keyword arguments of `jax.nn.dot_product_attention` on the cuDNN path.

  Unpacked rows: `query_seq_lengths` / `key_value_seq_lengths` (real tokens come first)
  and `is_causal`, which cuDNN applies inside the kernel. Packed rows: a dense mask (JAX
  hands it to cuDNN as an additive bias) and `is_causal`. Run through XLA they give the
  reference's outputs on real query rows (tests/attention_impl_test.py checks this on CPU).
  """
  if mask is None:
    return {}
  if mask.q_segment is not None:
    dense = layers.attention_mask(mask.q_valid, mask.kv_valid, mask.q_segment, mask.kv_segment)
    return {'mask': dense, 'is_causal': mask.causal}
  # A row of nothing but padding (the rows that finish an eval split) has length 0, which
  # cuDNN does not define (NaN outputs, and a NaN in a padding row poisons the real rows
  # through sum(loss * weights)): it attends to its first key instead; nothing reads it.
  length = lambda valid: jnp.maximum(jnp.sum(valid, axis=1, dtype=jnp.int32), 1)
  return {'query_seq_lengths': length(mask.q_valid),
          'key_value_seq_lengths': length(mask.kv_valid), 'is_causal': mask.causal}


def cudnn_unsupported(q_length: int, kv_length: int, mask: Optional[AttentionMask]) -> str:
  """Why cuDNN flash attention cannot take these shapes ('' if it can).

  JAX's cuDNN path trains with a bias (our packed-row mask) only at even lengths.
  """
  if mask is not None and mask.q_segment is not None and (q_length % 2 or kv_length % 2):
    return (f'packed rows need even sequence lengths with cuDNN, got {q_length} queries and '
            f'{kv_length} keys')
  return ''


def splash_segment_ids(mask: AttentionMask, q_length: int, kv_length: int):
  """Segment ids for the splash kernel, padded to `q_length` / `kv_length` positions.

  Real tokens keep their segment (1 when unpacked); padding and the positions added to
  reach the kernel's block size get 0, so padding queries attend to padding keys. The
  kernel needs every query row to see some key: a row whose id no key has (a target
  whose source is all padding, or padding queries against a source without padding)
  takes the id of key 0 instead. Self-attention never needs this (each row sees itself).

  Args:
    mask: the attention mask.
    q_length: padded query length (>= Lq).
    kv_length: padded key length (>= Lk).

  Returns:
    (q_ids (B, q_length), kv_ids (B, kv_length)) int32.
  """
  def ids(valid, segment, length):
    base = jnp.ones_like(valid, jnp.int32) if segment is None else segment.astype(jnp.int32)
    out = jnp.where(valid, base, 0)
    return jnp.pad(out, ((0, 0), (0, length - out.shape[1])))

  q_ids = ids(mask.q_valid, mask.q_segment, q_length)
  kv_ids = ids(mask.kv_valid, mask.kv_segment, kv_length)
  if not mask.causal:
    seen = jnp.any(q_ids[:, :, None] == kv_ids[:, None, :], axis=-1)  # (B, q_length)
    q_ids = jnp.where(seen, q_ids, kv_ids[:, :1])
  return q_ids, kv_ids


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def _block(length: int) -> int:
  """The largest of 512, 256, 128 that divides `length` (a multiple of 128)."""
  return next(b for b in (512, 256, SPLASH_BLOCK) if length % b == 0)


def _axes_size(mesh, axes) -> int:
  """Devices along mesh axes (None, a name or a tuple of names)."""
  names = axes if isinstance(axes, tuple) else (axes,)
  size = 1
  for name in names:
    if name is not None:
      size *= mesh.shape[name]
  return size


def check_splash_split(batch: int, heads: int, row_devices: int, head_devices: int) -> None:
  """Raises one ValueError naming config.model.attention_impl when the shard_map cannot
  give every device whole rows and whole heads (the kernel runs per device)."""
  problems = []
  if batch % row_devices:
    problems.append(f'the {batch} rows of a batch do not split over the {row_devices} '
                    "devices of the 'batch' mesh axes")
  if heads % head_devices:
    problems.append(f"the {heads} heads do not split over the {head_devices} devices of the "
                    "'heads' mesh axes")
  if problems:
    raise ValueError("config.model.attention_impl='splash' (or 'auto' on TPU): "
                     + '; '.join(problems) + " - pick sizes that divide, or 'xla'")


def splash_attention(q, k, v, mask: Optional[AttentionMask], *,
                     interpret: Optional[bool] = None, scale: bool = True):
  """Pallas TPU splash attention (imported here, on first use, so only TPU runs need it).

  Under a mesh (the trainer's steps run under `jax.set_mesh` and the logical-axis rules:
  `lmjax.parallel.RulesJit`) the kernel runs inside `jax.shard_map`: each device attends
  over its own rows (the 'batch' axes) and, when the rules split 'heads', its own heads,
  as MaxText does; Mosaic cannot partition the kernel itself. Without a mesh it runs on
  the whole arrays.

  Args:
    q: (B, Lq, H, D) queries.
    k: (B, Lk, H, D) keys.
    v: values, shaped like k.
    mask: the attention mask, or None.
    interpret: run the kernel in the Pallas interpreter; None = when the devices are not
      TPUs (tests on CPU).
    scale: divide the scores by sqrt(D).

  Returns:
    (B, Lq, H, D) attended values.
  """
  # pylint: disable=g-import-not-at-top  (TPU-only dependency, on first use)
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
  if interpret is None:
    interpret = jax.devices()[0].platform != 'tpu'
  b, lq, h, d = q.shape
  lk = k.shape[1]
  if mask is None:
    mask = AttentionMask(jnp.ones((b, lq), bool), jnp.ones((b, lk), bool))
  pq, pk = _round_up(lq, SPLASH_BLOCK), _round_up(lk, SPLASH_BLOCK)
  q_ids, kv_ids = splash_segment_ids(mask, pq, pk)
  # The kernel takes (H, L, D) per example and does not scale the scores.
  heads_major = lambda x, n: jnp.pad(x, ((0, 0), (0, n - x.shape[1]), (0, 0), (0, 0))
                                     ).transpose(0, 2, 1, 3)
  qh = heads_major(q * jnp.asarray(d ** -0.5 if scale else 1.0, q.dtype), pq)  # (B, H, pq, D)
  kh, vh = heads_major(k, pk), heads_major(v, pk)  # (B, H, pk, D)
  shape_mask = sm.CausalMask((pq, pk)) if mask.causal else sm.FullMask((pq, pk))
  bq, bk = _block(pq), _block(pk)
  blocks = sk.BlockSizes(block_q=bq, block_kv=bk, block_kv_compute=bk, block_q_dkv=bq,
                         block_kv_dkv=bk, block_kv_dkv_compute=bk, block_q_dq=bq, block_kv_dq=bk)

  def attend(qh, kh, vh, q_ids, kv_ids):  # one device's rows and heads
    kernel = sk.make_splash_mha(sm.MultiHeadMask([shape_mask] * qh.shape[1]), head_shards=1,
                                q_seq_shards=1, block_sizes=blocks, interpret=interpret)
    return jax.vmap(kernel)(qh, kh, vh, sk.SegmentIds(q=q_ids, kv=kv_ids))  # (b, h, pq, D)

  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    out = attend(qh, kh, vh, q_ids, kv_ids)
  else:
    rows, heads = nn.logical_to_mesh_axes(('activation_batch', 'activation_heads'))
    check_splash_split(b, h, _axes_size(mesh, rows), _axes_size(mesh, heads))
    per_head = P(rows, heads, None, None)
    out = jax.shard_map(attend, mesh=mesh, in_specs=(per_head,) * 3 + (P(rows, None),) * 2,
                        out_specs=per_head, check_vma=False)(qh, kh, vh, q_ids, kv_ids)
  return out.transpose(0, 2, 1, 3)[:, :lq].astype(q.dtype)


def fused_attention(q, k, v, mask: Optional[AttentionMask], impl: str, *, bias=None,
                    scale: bool = True):
  """Attention through a fused implementation ('xla', 'cudnn' or 'splash').

  Padding query rows: 'xla' gives what the reference gives (the mean of the values);
  'cudnn' and 'splash' may give other values there. Nothing reads those rows: later
  layers mask them as keys, and the loss weights them 0.

  Args:
    q: (B, Lq, H, D) queries.
    k: (B, Lk, H, D) keys.
    v: values, shaped like k.
    mask: the attention mask, or None.
    impl: 'xla', 'cudnn' or 'splash' (resolved: see lmjax.platforms.resolve_attention_impl).
    bias: (B|1, H, Lq, Lk) float32 added to the scores, or None; 'xla' only (the
      resolver never picks a kernel without bias support for a biased attention).
    scale: divide the scores by sqrt(D) (False: T5).

  Returns:
    (B, Lq, H, D) attended values.
  """
  if bias is not None and impl != 'xla':
    raise ValueError(f'fused_attention: impl={impl!r} takes no attention bias')
  factor = None if scale else 1.0  # None: JAX's default 1/sqrt(D)
  if impl == 'xla':
    if bias is not None:
      bias = bias.astype(q.dtype)
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=dense_or_none(mask),
                                        scale=factor, implementation='xla')
  if impl == 'cudnn':
    return jax.nn.dot_product_attention(q, k, v, scale=factor, implementation='cudnn',
                                        **cudnn_arguments(mask))
  if impl == 'splash':
    return splash_attention(q, k, v, mask, scale=scale)
  raise ValueError(f'fused_attention: impl={impl!r} is not one of xla, cudnn, splash')

