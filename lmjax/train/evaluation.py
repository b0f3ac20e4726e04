"""Evaluation during training: the objective's loss sums over the eval split, its extra
metrics, and its predictor's scores.

What is reported for which model and task is the objective's (`Objective.metric_names`;
the predictors' table is in `lmjax.objectives.predictions`): the evaluator only runs the
passes. For example a seq2seq model reports loss, accuracy, nll, perplexity (teacher
forced) and exact_match, bleu, chrf (greedy decodes); a CRF tagger loss, accuracy (of the
Viterbi tags), nll_per_token and entity P/R/F1; a VAE its ELBO terms.
"""

import functools
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from lmjax import parallel
from lmjax.data import pipeline
from lmjax.train import step as step_lib


def check_best_metric(config, objective) -> None:
  """Raises a ValueError when config.train.best_metric is not reported for this run."""
  names = objective.metric_names()
  if config.train.best_metric not in names:
    raise ValueError(f'config.train.best_metric={config.train.best_metric!r} is not an eval '
                     f'metric of this run (config.task.name={config.task.name!r}); choose one '
                     f'of {list(names)}')


def gather(x) -> np.ndarray:
  """A batch-sharded global array as one host array (every process's rows)."""
  return np.asarray(multihost_utils.process_allgather(x, tiled=True)
                    if jax.process_count() > 1 else x)


class Evaluator:
  """Compiles the objective's eval and predict functions once and runs them over the eval split.

  Also the runner the objective's `extra_metrics` use: `jit`, `batches`, `to_global`,
  `gather`, `task` and `batch_size`.
  """

  def __init__(self, task, objective, config, mesh, batch_sharding, param_shardings):
    self.task, self.objective, self.config = task, objective, config
    self.batch_sharding, self.param_shardings = batch_sharding, param_shardings
    self.batch_size = config.eval.batch_size
    self.rep = parallel.replicated(mesh)
    self._compiled: Dict[str, Callable] = {}
    carry_sharding = objective.carry_sharding(batch_sharding)
    self.rules = parallel.rules_from_config(config)
    self.mesh = mesh
    self.eval_step = self.jit_under_rules(
        functools.partial(step_lib.eval_step, objective=objective),
        in_shardings=(param_shardings, carry_sharding, batch_sharding),
        out_shardings=(self.rep, carry_sharding))
    self.predictor = objective.predictor
    # predict_fn(params, global batch) -> (B, ...) predictions; a tool may replace it
    # (e.g. beam search instead of the greedy decodes).
    self.predict_fn = None
    if self.predictor is not None:
      self.predict_fn = self.jit_under_rules(self.predictor.predict_batch,
                                in_shardings=(param_shardings, batch_sharding),
                                out_shardings=batch_sharding)

  def jit(self, name: str, fn, out: str, extra: int = 0):
    """`fn(params, batch, *extra replicated args)` compiled once per `name` with the run's
    shardings; its outputs are 'replicated' or sharded like the 'batch'."""
    if name not in self._compiled:
      self._compiled[name] = self.jit_under_rules(
          fn, in_shardings=(self.param_shardings, self.batch_sharding) + (self.rep,) * extra,
          out_shardings=self.rep if out == 'replicated' else self.batch_sharding)
    return self._compiled[name]

  def jit_under_rules(self, fn, **jit_kwargs):
    """`jax.jit(fn)` under the run's mesh and logical-axis rules (live activation sharding)."""
    return parallel.RulesJit(fn, self.mesh, self.rules, **jit_kwargs)

  def to_global(self, local):
    """This process's rows of a batch → global arrays sharded over the batch axes."""
    return parallel.to_global(local, self.batch_sharding)

  def batches(self, examples):
    """Global eval batches of `examples` (this process's share of each, padded)."""
    for local in pipeline.eval_batches(examples, self.batch_size, self.task.lengths,
                                       jax.process_index(), jax.process_count()):
      yield self.to_global(local)

  def gather(self, x) -> np.ndarray:
    return gather(x)

  def loss_sums(self, params) -> Dict[str, Any]:
    """The objective's metric sums over the eval split (host arrays)."""
    carry = self.objective.eval_carry(self.batch_size, self.batch_sharding)
    sums = None
    for local in self.objective.eval_batches(self.task, self.batch_size, jax.process_index(),
                                             jax.process_count()):
      m, carry = self.eval_step(params, carry, self.to_global(local))
      sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
    return jax.device_get(sums)

  def evaluate(self, params, iw: bool = True) -> Dict[str, float]:
    """The eval-split metrics of the run (`objective.metric_names()`).

    Args:
      params: model parameters (sharded).
      iw: the run's last eval: costly bounds (a VAE's importance-weighted NLL) run too.

    Returns:
      Metric name → value.
    """
    metrics = self.objective.summarize(self.loss_sums(params))
    metrics.update(self.objective.extra_metrics(self, params, final=iw))
    if self.predictor is not None:
      metrics.update(self.predictor.score(self.predict(params, self.task.eval_examples)))
    return metrics

  def predict(self, params, examples, step: Optional[Callable] = None) -> List[np.ndarray]:
    """The predictor's outputs for `examples`, in order (class ids, tag rows or decodes).

    `step(params, batch)` replaces `predict_fn` (e.g. an ensemble's).
    """
    step = step or self.predict_fn
    out = []
    for batch in self.batches(examples):
      out.extend(gather(step(params, batch)))
    return out[:len(examples)]

  def predict_texts(self, params, examples) -> List[str]:
    """The predictions for `examples` as text (detokenized decodes, label names)."""
    return self.predictor.texts(self.predict(params, examples), examples)

  def samples(self, params, n: int) -> List[str]:
    """A few 'source → prediction (reference)' lines for the log."""
    if n <= 0 or self.predictor is None:
      return []
    examples = self.task.eval_examples[:n]
    preds = self.predict_texts(params, examples)
    refs = self.task.eval_references[:n]
    return [f'{s}  →  {p}   (ref: {r})' for s, p, r in zip(self.task.eval_sources[:n], preds, refs)]
