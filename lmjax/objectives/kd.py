"""Word-level knowledge distillation: a frozen teacher's distribution in the training loss.

With config.train.kd_weight = w > 0 and temperature T the loss of a target token is

    (1 − w) · CE(student) + w · T² · KL(softmax(teacher / T) ‖ softmax(student / T))

(Hinton et al., 2015; Kim & Rush, 2016 call it word-level KD), summed over the non-pad
targets and divided by their number as the plain loss is. The teacher is the trained run
in config.train.kd_teacher_workdir: its model rebuilt from its config.json, its
parameters (the moving average when it kept one) read from the checkpoint named by
config.train.kd_teacher_checkpoint (`lmjax.train.compose.load_teacher`), placed on the
student's mesh with the student's logical-axis rules, and passed to every train step as
an argument (`step_args`, not a constant of the compiled step); no gradient reaches them.
`Distillation` wraps the student's own objective: its eval, predictions and data are the
wrapped objective's.

Both models must share one vocabulary: a fresh student workdir gets a copy of the
teacher's tokenizers/ (`source_run.adopt_tokenizers`, before the task is built).
"""

from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.objectives import base
from lmjax.objectives import cross_entropy
from lmjax.objectives import losses


class Distillation(base.Objective):
  """Word-level KD around a token cross-entropy objective (the module docstring).

  Args:
    inner: the student's objective (`TokenCrossEntropy`: its logits and sums).
    teacher: the teacher's unbound module.
    teacher_params: its parameters, placed on the student's mesh.
    teacher_shardings: their shardings.
    weight: w in [0, 1].
    temperature: T > 0.
  """

  def __init__(self, inner: cross_entropy.TokenCrossEntropy, teacher: nn.Module,
               teacher_params, teacher_shardings, weight: float, temperature: float):
    super().__init__(inner.model, inner.predictor)
    self.inner, self.teacher = inner, teacher
    self.teacher_params, self.teacher_shardings = teacher_params, teacher_shardings
    self.weight, self.temperature = float(weight), float(temperature)
    self.loss_metrics = inner.loss_metrics

  def step_args(self) -> Tuple[Tuple[Any, ...], Tuple[Any, ...]]:
    return (self.teacher_params,), (self.teacher_shardings,)

  def teacher_logits(self, teacher_params, batch) -> jnp.ndarray:
    """The teacher's logits (no dropout, no gradient) for a batch."""
    out = self.teacher.apply({'params': teacher_params}, base.model_inputs(batch), train=False)
    return jax.lax.stop_gradient(out)

  def loss_and_metrics(self, params, batch, args: Sequence[Any] = (), *, train: bool,
                       rngs=None, step=0, carry=None):
    """Training: loss = (1 − w)·CE + w·T²·Σ weight·KL, plus 'kd_kl' = Σ weight·KL.
    Evaluation: the student's own objective (no teacher)."""
    if not train:
      return self.inner.loss_and_metrics(params, batch, train=False, rngs=rngs, step=step,
                                         carry=carry)
    (teacher_params,) = args
    logits, carry = self.inner.forward(params, batch, train=True, rngs=rngs, carry=carry)
    sums = self.inner.logit_sums(logits, batch, train=True)
    weights = self.inner.label_weights(batch)
    kl = jnp.sum(losses.kd_token_kl(logits, self.teacher_logits(teacher_params, batch),
                                    self.temperature) * weights)
    t2 = self.temperature ** 2
    sums = dict(sums, loss=(1.0 - self.weight) * sums['loss'] + self.weight * t2 * kl, kd_kl=kl)
    return sums['loss'], sums, carry

  def means(self, sums: Dict[str, Any]) -> Dict[str, float]:
    out = self.inner.means(sums)
    if 'kd_kl' in sums:  # training sums: the mean KL to the teacher per target
      out['kd_kl'] = float(sums['kd_kl']) / max(float(sums['weight']), 1.0)
    return out

  def extra_metric_names(self) -> Tuple[str, ...]:
    return self.inner.extra_metric_names()

  def extra_metrics(self, runner, params, final: bool) -> Dict[str, float]:
    return self.inner.extra_metrics(runner, params, final)

  def eval_batches(self, task, batch_size: int, process_index: int, process_count: int):
    return self.inner.eval_batches(task, batch_size, process_index, process_count)

  def train_iterator(self, task, batch_size: int, seed: int, process_index: int,
                     process_count: int):
    return self.inner.train_iterator(task, batch_size, seed, process_index, process_count)

  def scores(self, params, batch):
    return self.inner.scores(params, batch)

  def predict_from_scores(self, scores, batch, score_bias=None):
    return self.inner.predict_from_scores(scores, batch, score_bias)

  def predict_labels(self, params, batch, score_bias=None):
    return self.inner.predict_labels(params, batch, score_bias)
