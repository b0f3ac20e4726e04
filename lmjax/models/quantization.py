"""int8 quantization through Google's qwix library: quantization-aware training (QAT),
post-training quantization (PTQ), and the bytes the parameters take.

qwix intercepts the matmuls (`lax.dot_general`, `jnp.dot`) a flax module runs on its own
parameters: nothing in lmjax implements a quantizer. The models name qwix only in the
embedding lookup of a quantized tied table (`lmjax.models.layers.lookup`).

    qmodel = quantization.ptq_model(model, 'int8')
    abstract = quantization.abstract_params(qmodel, dummy_batch)  # boxed, logical names
    qparams = quantization.quantize_params(params, abstract)       # int8 values + scales
    logits = qmodel.apply({'params': qparams}, batch, train=False)

Modes (`config.train.quantization`, `--quantize`):
  int8          int8 weights (absmax, one scale per output channel) and int8 activations
                (dynamic: one scale per row, computed on the fly) in every matmul with a
                weight: W8A8.
  int8_weights  int8 weights only; the activations stay float.
Products of two activations (attention scores and mixing) stay float in both. What is
stored as int8 in our models is listed in docs/COMPRESSION.md (the LSTM cells' kernels
are not: their matmuls run outside the module that owns them).
"""

from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import qwix

MODES = ('int8', 'int8_weights')
# Methods of a model that run matmuls on its parameters (lmjax/models/CONTRACT.md).
METHODS = ('__call__', 'encode', 'decode_step', 'apply_with_state', 'crf_nll', 'crf_decode')


def rules(mode: str) -> Sequence[qwix.QuantizationRule]:
  """The qwix rules of `mode`: the matmuls of every module ('dot_general'; `jnp.dot` too)."""
  if mode not in MODES:
    raise ValueError(f'quantization mode {mode!r}: expected one of {MODES}')
  act = jnp.int8 if mode == 'int8' else None
  return [qwix.QuantizationRule(module_path='.*', op_names=('dot_general',),
                                weight_qtype=jnp.int8, act_qtype=act)]


def _methods(model: nn.Module) -> Tuple[str, ...]:
  return tuple(m for m in METHODS if hasattr(type(model), m))


def qat_model(model: nn.Module, mode: str) -> nn.Module:
  """`model` with fake-quantized int8 matmuls for training (straight-through gradients).

  Its parameters are those of `model` (same tree and initialisation, same checkpoints),
  so `ptq_model` quantizes them for inference like any float run's.
  """
  provider = qwix.QtProvider([qwix.QtRule(**vars(r)) for r in rules(mode)])
  return qwix.quantize_model(model, provider, methods=_methods(model))


def ptq_model(model: nn.Module, mode: str) -> nn.Module:
  """`model` running on the int8 parameters of `quantize_params` (post-training)."""
  return qwix.quantize_model(model, qwix.PtqProvider(rules(mode)), methods=_methods(model))


def abstract_params(qmodel: nn.Module, dummy_batch) -> Any:
  """Shapes of `ptq_model`'s parameters, boxed with their logical axis names.

  Args:
    qmodel: from `ptq_model`.
    dummy_batch: a batch of the right shapes (values unused).

  Returns:
    The parameter tree of jax.ShapeDtypeStruct leaves in flax `Partitioned` boxes; a
    quantized weight is a qwix WithAux(QArray(qvalue int8, scale float32)).
  """
  rng = jax.random.key(0)
  return jax.eval_shape(lambda: qmodel.init({'params': rng, 'dropout': rng}, dummy_batch,
                                            train=False))['params']


def quantize_params(params, abstract) -> Any:
  """Float parameters (unboxed) → the int8 tree of `abstract` (from `abstract_params`)."""
  return qwix.quantize_params(params, nn.meta.unbox(abstract))


def _is_quantized(x) -> bool:
  return isinstance(x, qwix.QArray)


def param_stats(params) -> Dict[str, float]:
  """What a parameter tree holds and how many bytes it takes.

  Args:
    params: float parameters, or the int8 tree of `quantize_params`.

  Returns:
    values: number of parameters (a quantized weight counts its int8 values);
    bytes: bytes of every array (int8 values and their float32 scales included);
    bytes_float32: bytes of the same parameters in float32 (4 per value);
    quantized_values: values stored as int8.
  """
  leaves = jax.tree.leaves(params, is_leaf=_is_quantized)
  values = quantized = nbytes = 0
  for x in leaves:
    arrays = [x]
    if _is_quantized(x):
      arrays = [a for a in (x.qvalue, x.scale, x.zero_point) if a is not None]
    nbytes += sum(np.dtype(a.dtype).itemsize * int(np.prod(a.shape)) for a in arrays)
    n = int(np.prod(x.shape))
    values += n
    quantized += n if _is_quantized(x) else 0
  return {'values': values, 'bytes': nbytes, 'bytes_float32': 4 * values,
          'quantized_values': quantized}
