r"""Model FLOPs: analytic matmul counts, a jaxpr matmul counter, and XLA's cost analysis.

Analytic counts include matrix multiplications only (2 FLOPs per multiply-add):
embedding lookups are gathers (0), the tied output projection is a matmul, and
layer norms, softmax, dropout, the loss and the optimizer are left out. Training
is 3× the forward pass: the backward pass multiplies each forward matmul's output
gradient with both operands (2 matmuls of the same size). This is exact here because
the first layer's input gradient is needed too (it flows into the embedding). Attention
is counted as computed: the full T×T causal matrix, the full decode cache. Rematerialised
recomputation (`remat_policy`) is not model FLOPs and is not counted (XLA's count has it).

Transformer encoder-decoder, batch B, source S, target T, width D, qkv width Q, MLP F,
vocab V, Le encoder and Ld decoder layers, per forward pass:

  encoder, per source token and layer:  8·D·Q (q, k, v, out) + 4·S·Q (QKᵀ, AV) + 4·D·F
  decoder, per target token and layer:  8·D·Q + 4·T·Q (self) + 4·D·Q + 4·S·Q (cross q, out)
                                        + 4·D·F
  cross-attention keys/values, per source token and decoder layer: 4·D·Q
  logits, per target token: 2·D·V

  forward = B·S·Le·(8DQ + 4SQ + 4DF) + B·T·Ld·(12DQ + 4TQ + 4SQ + 4DF)
            + B·S·Ld·4DQ + B·T·2DV

LSTM LM, per token and layer with input width I (E for the first, H after):
8·H·(I + H) (input and recurrent kernels, 4 gates); logits 2·E·V (tied; + 2·H·E for a
projection when H ≠ E), or 2·H·V untied.
"""

import math
from typing import Any, Mapping, Optional

import jax


def transformer_forward_flops(model: Mapping[str, Any], vocab_size: int, batch_size: int,
                              source_length: int, target_length: int) -> int:
  """Forward-pass matmul FLOPs of the encoder-decoder (formula in the module docstring).

  Args:
    model: `config.model` of a transformer/encdec (emb_dim, qkv_dim, mlp_dim, layers).
    vocab_size: target vocabulary V.
    batch_size: B.
    source_length: S.
    target_length: T.

  Returns:
    FLOPs of one forward pass.
  """
  d, q, f, v = model['emb_dim'], model['qkv_dim'], model['mlp_dim'], vocab_size
  le, ld = model['num_encoder_layers'], model['num_decoder_layers']
  b, s, t = batch_size, source_length, target_length
  encoder = b * s * le * (8 * d * q + 4 * s * q + 4 * d * f)
  decoder = b * t * ld * (12 * d * q + 4 * t * q + 4 * s * q + 4 * d * f)
  cross_kv = b * s * ld * 4 * d * q
  logits = b * t * 2 * d * v
  return encoder + decoder + cross_kv + logits


def transformer_train_flops(model: Mapping[str, Any], vocab_size: int, batch_size: int,
                            source_length: int, target_length: int) -> int:
  """Matmul FLOPs of one train step: 3 × `transformer_forward_flops` (forward + backward)."""
  return 3 * transformer_forward_flops(model, vocab_size, batch_size, source_length, target_length)


def transformer_decode_flops(model: Mapping[str, Any], vocab_size: int, batch_size: int,
                             source_length: int, max_length: int, beam_size: int = 1) -> int:
  """Matmul FLOPs of one decode call (`lmjax.decoding.predict.beam_decode` / `greedy_decode`).

  The encoder runs once on B sentences and its output is projected to cross-attention
  keys/values once per sentence (`lmjax.decoding.predict.precompute_cross`; repeated, not
  recomputed, for the K beams); then each of the L steps runs one token per row of the
  N = B·K rows through the decoder, attending over the whole self-attention cache of
  its sentence, K slots × L positions (masked to the row's own history, but computed:
  see `MultiHeadAttention._self_step`), and the S source positions, and the logits.

  Args:
    model: `config.model` of a transformer/encdec.
    vocab_size: V.
    batch_size: sentences B.
    source_length: S.
    max_length: decoded tokens L (every step runs; EOS unreachable).
    beam_size: K (1 for greedy).

  Returns:
    FLOPs of one call.
  """
  d, q, f, v = model['emb_dim'], model['qkv_dim'], model['mlp_dim'], vocab_size
  le, ld = model['num_encoder_layers'], model['num_decoder_layers']
  b, s, l, n = batch_size, source_length, max_length, batch_size * beam_size
  encoder = b * s * le * (8 * d * q + 4 * s * q + 4 * d * f)
  cross_kv = b * s * ld * 4 * d * q
  step = ld * (12 * d * q + 4 * beam_size * l * q + 4 * s * q + 4 * d * f) + 2 * d * v
  return encoder + cross_kv + l * n * step


def lstm_train_flops(model: Mapping[str, Any], vocab_size: int, batch_size: int,
                     length: int) -> int:
  """Matmul FLOPs of one LSTM LM train step (3 × forward; formula in the module docstring)."""
  e, h = model['emb_dim'], model['hidden_dim']
  per_token = sum(8 * h * ((e if i == 0 else h) + h) for i in range(model['num_layers']))
  if model['tie_output']:
    per_token += 2 * e * vocab_size + (2 * h * e if h != e else 0)
  else:
    per_token += 2 * h * vocab_size
  return 3 * batch_size * length * per_token


def _sub_jaxprs(value):
  """Jaxprs held by an equation parameter (a Jaxpr, a ClosedJaxpr, or a tuple of them)."""
  if isinstance(value, (tuple, list)):
    for x in value:
      yield from _sub_jaxprs(x)
  elif hasattr(value, 'eqns'):
    yield value
  elif hasattr(value, 'jaxpr') and hasattr(value.jaxpr, 'eqns'):
    yield value.jaxpr


def _live_eqns(jaxpr):
  """The equations that the outputs depend on (dead code, which XLA removes, left out)."""
  is_var = lambda v: not hasattr(v, 'val')  # Literals carry a value, Vars do not
  live = {v for v in jaxpr.outvars if is_var(v)}
  kept = []
  for eqn in reversed(jaxpr.eqns):
    if eqn.effects or any(v in live for v in eqn.outvars):
      kept.append(eqn)
      live.update(v for v in eqn.invars if is_var(v))
  return kept[::-1]


def count_jaxpr_matmul_flops(jaxpr) -> int:
  """2·|output|·|contraction| summed over every live dot_general of `jaxpr` (recursively).

  A scan body counts `length` times; of a cond's branches the largest counts; a while
  body counts once (its trip count is not static). Equations whose results are unused
  are skipped, as XLA's dead-code elimination drops them.

  Args:
    jaxpr: a jax Jaxpr (e.g. `jax.make_jaxpr(fn)(*args).jaxpr`).

  Returns:
    Matmul FLOPs.
  """
  total = 0
  for eqn in _live_eqns(jaxpr):
    name = eqn.primitive.name
    if name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      out = eqn.outvars[0].aval.shape
      total += 2 * math.prod(out) * math.prod(lhs[i] for i in contract)
    elif name == 'scan':
      total += eqn.params['length'] * count_jaxpr_matmul_flops(eqn.params['jaxpr'].jaxpr)
    elif name == 'cond':
      total += max(count_jaxpr_matmul_flops(b.jaxpr) for b in eqn.params['branches'])
    else:
      for value in eqn.params.values():
        for sub in _sub_jaxprs(value):
          total += count_jaxpr_matmul_flops(sub)
  return total


def jaxpr_matmul_flops(fn, *args) -> int:
  """Matmul FLOPs of `fn(*args)` counted from its jaxpr (an independent check of the formulas)."""
  return count_jaxpr_matmul_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def xla_flops(compiled) -> Optional[float]:
  """'flops' of XLA's cost analysis of a compiled executable (None if unavailable).

  XLA counts every op (elementwise, reductions, the optimizer, recomputation), 2 per
  multiply-add in dots; a while-loop body (beam search) counts once.
  """
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  (backends without cost analysis)
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  if not analysis or 'flops' not in analysis:
    return None
  return float(analysis['flops'])
