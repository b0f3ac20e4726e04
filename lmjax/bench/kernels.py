"""The attention kernel matrix of `experiments/device_check.sh`: every fused impl vs 'reference'.

For each attention implementation this platform runs (`IMPLS`), each mask case (`CASES`:
padding with an empty row, causal, cross attention with Lq != Lk, packed rows at lengths
64 and 192) and each head_dim (`HEAD_DIMS`), one jitted bf16 forward + backward pass
(`jax.vjp` with a cotangent that weights real query rows only) is compared with
'reference' on the same bf16 inputs:

  fwd err   max |out - ref| over real query rows, relative to max |ref|
  grad err  the same over dq, dk, dv (the largest of the three)
  finite    every output and gradient is finite, padding rows and the empty row included
  fused     the lowered program holds the fused kernel (`FUSED_MARKERS`: cuDNN's
            custom call, Mosaic's TPU custom call); '-' for 'xla', which has none

A check passes when all of these hold (errors within `TOLERANCE`).
"""

import dataclasses
import functools
from typing import Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from lmjax.models import attention
from lmjax.models import attention_impls

IMPLS = {'cpu': ('xla',), 'gpu': ('xla', 'cudnn'), 'tpu': ('xla', 'splash')}
CASES = ('padding', 'causal', 'cross', 'packed64', 'packed192')
HEAD_DIMS = (32, 64, 128)
# Substrings of the lowered StableHLO that show the fused kernel is in the program.
FUSED_MARKERS = {'cudnn': '__cudnn$fmha', 'splash': 'tpu_custom_call'}
# bf16 inputs, f32 reference arithmetic: ~3 bf16 ulps of the largest value.
TOLERANCE = 3e-2
BATCH, HEADS, LENGTH, CROSS_KV = 4, 4, 128, 96


@dataclasses.dataclass
class Check:
  """One (impl, case, head_dim) comparison with 'reference' (see the module docstring)."""
  impl: str
  case: str
  head_dim: int
  fwd_err: float
  grad_err: float
  finite: bool
  fused: Optional[bool]  # None: the impl has no fused kernel to look for

  @property
  def ok(self) -> bool:
    return (self.finite and self.fused is not False and self.fwd_err <= TOLERANCE
            and self.grad_err <= TOLERANCE)

  def as_dict(self) -> Dict:
    return dict(dataclasses.asdict(self), ok=self.ok)


def unsupported(impl: str, case: str) -> str:
  """Why `impl` does not take `case` by design (the model falls back to 'xla'), or ''."""
  mask, lq, lk = case_mask(case)
  return attention_impls.cudnn_unsupported(lq, lk, mask) if impl == 'cudnn' else ''


def case_mask(case: str) -> Tuple[attention_impls.AttentionMask, int, int]:
  """(mask, Lq, Lk) of a case; every case has one row with no real tokens.

  Raises:
    ValueError: an unknown case.
  """
  if case in ('padding', 'causal'):
    lengths = np.array([LENGTH, LENGTH // 2, 1, 0])  # the last row is all padding
    valid = jnp.asarray(np.arange(LENGTH)[None] < lengths[:, None])  # (B, L)
    return attention_impls.AttentionMask(valid, valid, causal=case == 'causal'), LENGTH, LENGTH
  if case == 'cross':
    q_valid = jnp.asarray(np.arange(LENGTH)[None] < np.array([LENGTH, 70, 5, 0])[:, None])
    kv_valid = jnp.asarray(np.arange(CROSS_KV)[None] < np.array([CROSS_KV, 40, 1, 0])[:, None])
    return attention_impls.AttentionMask(q_valid, kv_valid), LENGTH, CROSS_KV
  if case in ('packed64', 'packed192'):
    length = int(case[len('packed'):])
    seg = np.zeros((BATCH, length), np.int32)
    for b in range(BATCH - 1):  # 2 examples, then b + 7 padding positions
      seg[b, :length // 3] = 1
      seg[b, length // 3:length - 7 - b] = 2
    seg = jnp.asarray(seg)  # the last row: all padding
    return (attention_impls.AttentionMask(seg > 0, seg > 0, seg, seg, causal=True),
            length, length)
  raise ValueError(f'attention kernel case {case!r}: expected one of {", ".join(CASES)}')


def _real_rows(mask: attention_impls.AttentionMask) -> jnp.ndarray:
  """(B, Lq) True on query rows that attend to at least one real key."""
  return jnp.any(mask.dense()[:, 0], axis=-1)


def _attend(impl: str, mask: attention_impls.AttentionMask):
  if impl == 'reference':
    return lambda q, k, v: attention.dot_product_attention(
        q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), mask.dense(),
        None, 0.0, True, jnp.float32)
  return lambda q, k, v: attention_impls.fused_attention(q, k, v, mask, impl)


def _forward_backward(impl: str, mask, q, k, v, cotangent):
  """Jitted outputs and (dq, dk, dv) of one impl; also the lowered program's text."""
  def run(q, k, v, cotangent):
    out, vjp = jax.vjp(_attend(impl, mask), q, k, v)
    return out, vjp(cotangent.astype(out.dtype))
  fn = jax.jit(run)
  text = fn.lower(q, k, v, cotangent).as_text()
  out, grads = fn(q, k, v, cotangent)
  return np.asarray(out, np.float32), [np.asarray(g, np.float32) for g in grads], text


def _rel_err(got: np.ndarray, want: np.ndarray, rows: Optional[np.ndarray]) -> float:
  if rows is not None:  # (B, Lq) real query rows of q-shaped arrays
    got, want = got[rows], want[rows]
  scale = float(np.max(np.abs(want))) if want.size else 0.0
  return float(np.max(np.abs(got - want))) / max(scale, 1e-6) if want.size else 0.0


def _inputs(case: str, head_dim: int, seed: int):
  """(mask, q, k, v (bf16), cotangent (f32, zero on rows without a real key), real rows)."""
  mask, lq, lk = case_mask(case)
  rng = np.random.default_rng(seed)
  draw = lambda length: jnp.asarray(rng.normal(size=(BATCH, length, HEADS, head_dim)), jnp.bfloat16)
  q, k, v = draw(lq), draw(lk), draw(lk)
  rows = _real_rows(mask)
  cotangent = jnp.asarray(rng.normal(size=q.shape), jnp.float32) * rows[:, :, None, None]
  return mask, q, k, v, cotangent, np.asarray(rows)


@functools.lru_cache(maxsize=None)
def _reference(case: str, head_dim: int, seed: int):
  """'reference' outputs and gradients of a case, computed once for every impl compared."""
  mask, q, k, v, cotangent, _ = _inputs(case, head_dim, seed)
  out, grads, _ = _forward_backward('reference', mask, q, k, v, cotangent)
  return out, grads


def check(impl: str, case: str, head_dim: int, seed: int = 0) -> Check:
  """Compares `impl` with 'reference' on one case and head_dim (bf16 inputs)."""
  mask, q, k, v, cotangent, real = _inputs(case, head_dim, seed)
  out, grads, text = _forward_backward(impl, mask, q, k, v, cotangent)
  ref_out, ref_grads = _reference(case, head_dim, seed)
  fwd_err = _rel_err(out, ref_out, real)
  grad_err = max(_rel_err(grads[0], ref_grads[0], real),
                 _rel_err(grads[1], ref_grads[1], None), _rel_err(grads[2], ref_grads[2], None))
  finite = bool(np.isfinite(out).all() and all(np.isfinite(g).all() for g in grads))
  marker = FUSED_MARKERS.get(impl)
  return Check(impl, case, head_dim, fwd_err, grad_err, finite,
               None if marker is None else marker in text)


def matrix(platform: str, cases: Sequence[str] = CASES, head_dims: Sequence[int] = HEAD_DIMS,
           log=print) -> List[Check]:
  """Every impl of `platform` (IMPLS) × case × head_dim; a check that raises is a failed row.

  Args:
    platform: 'cpu', 'gpu' or 'tpu'.
    cases: of CASES.
    head_dims: widths of one head.
    log: one line per check.

  Returns:
    The checks, in impl, case, head_dim order.
  """
  out = []
  for impl in IMPLS.get(platform, ('xla',)):
    for case in cases:
      why = unsupported(impl, case)
      if why:
        log(f'[device_check] attention {impl} {case}: skipped ({why})')
        continue
      for head_dim in head_dims:
        try:
          c = check(impl, case, head_dim)
        except Exception as e:  # pylint: disable=broad-except  (a kernel that fails is a row)
          log(f'[device_check] attention {impl} {case} head_dim {head_dim}: FAILED: '
              f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}')
          c = Check(impl, case, head_dim, float('nan'), float('nan'), False,
                    None if impl not in FUSED_MARKERS else False)
        else:
          log(f'[device_check] attention {impl} {case} head_dim {head_dim}: '
              f'{"ok" if c.ok else "FAILED"} (fwd {c.fwd_err:.1e}, grad {c.grad_err:.1e})')
        out.append(c)
  return out


def format_matrix(checks: Sequence[Check]) -> str:
  """One line per check: impl, case, head_dim, errors, finite, fused, verdict."""
  head = f'{"impl":<8} {"case":<10} {"head_dim":>8} {"fwd err":>9} {"grad err":>9} finite fused  ok'
  lines = [f'attention kernels vs reference (bf16, tolerance {TOLERANCE:g} of max |ref|)',
           head, '-' * len(head)]
  for c in checks:
    fused = '-' if c.fused is None else ('yes' if c.fused else 'NO')
    lines.append(f'{c.impl:<8} {c.case:<10} {c.head_dim:>8} {c.fwd_err:>9.1e} '
                 f'{c.grad_err:>9.1e} {"yes" if c.finite else "NO":>6} {fused:>5} '
                 f'{"ok" if c.ok else "FAIL":>3}')
  return '\n'.join(lines)
