"""Evaluation during training: loss/accuracy on the eval split and decode-based metrics."""

import functools
from typing import Dict, List

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from lmjax import parallel
from lmjax import predict
from lmjax.data import pipeline
from lmjax.train import step as step_lib


class Evaluator:
  """Compiles the eval and greedy-decode functions once and runs them over the eval split."""

  def __init__(self, task, model, config, mesh, batch_sharding, param_shardings):
    self.task, self.model, self.config = task, model, config
    self.batch_sharding = batch_sharding
    rep = parallel.replicated(mesh)
    self.eval_step = jax.jit(functools.partial(step_lib.eval_step, model=model),
                             in_shardings=(param_shardings, batch_sharding), out_shardings=rep)
    self.decode_length = config.eval.decode_max_length or task.lengths.get('targets', 0)
    self.decode = None
    if task.kind == 'seq2seq':
      self.decode = jax.jit(
          functools.partial(predict.greedy_decode, model, max_length=self.decode_length),
          in_shardings=(param_shardings, batch_sharding), out_shardings=batch_sharding)

  def _batches(self, examples):
    return pipeline.eval_batches(examples, self.config.eval.batch_size, self.task.lengths,
                                 jax.process_index(), jax.process_count())

  def evaluate(self, params) -> Dict[str, float]:
    """Eval-split loss, accuracy and perplexity; plus decode metrics for seq2seq tasks.

    Args:
      params: model parameters (sharded).

    Returns:
      Metric name → value.
    """
    sums = None
    for local in self._batches(self.task.eval_examples):
      m = self.eval_step(params, parallel.to_global(local, self.batch_sharding))
      sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
    metrics = step_lib.summarize(jax.device_get(sums))
    metrics.pop('grad_norm', None)
    if self.decode is not None:
      predictions = self.predict_texts(params, self.task.eval_examples)
      metrics.update(self.task.score_predictions(predictions))
    return metrics

  def predict_texts(self, params, examples) -> List[str]:
    """Greedy-decoded, detokenized outputs for `examples` (in order)."""
    out = []
    for local in self._batches(examples):
      batch = parallel.to_global(local, self.batch_sharding)
      ids = self.decode(params, batch['inputs'])
      ids = np.asarray(multihost_utils.process_allgather(ids, tiled=True)
                       if jax.process_count() > 1 else ids)
      out.extend(self.task.detokenize(row) for row in ids)
    return out[:len(examples)]

  def samples(self, params, n: int) -> List[str]:
    """A few 'source → prediction (reference)' lines for the log."""
    if self.decode is None or n <= 0:
      return []
    examples = self.task.eval_examples[:n]
    preds = self.predict_texts(params, examples)
    return [f'{s}  →  {p}   (ref: {r})' for s, p, r in
            zip(self.task.eval_sources[:n], preds, self.task.eval_references[:n])]
