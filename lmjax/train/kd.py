"""Word-level knowledge distillation: a frozen teacher's distribution in the training loss.

With config.train.kd_weight = w > 0 and temperature T the loss of a target token is

    (1 − w) · CE(student) + w · T² · KL(softmax(teacher / T) ‖ softmax(student / T))

(Hinton et al., 2015; Kim & Rush, 2016 call it word-level KD), summed over the non-pad
targets and divided by their number as the plain loss is. The teacher is the trained run
in config.train.kd_teacher_workdir: its model rebuilt from its config.json, its
parameters (the moving average when it kept one) read from the checkpoint named by
config.train.kd_teacher_checkpoint, placed on the student's mesh with the student's
logical-axis rules, and passed to every train step as an argument (not a constant of the
compiled step); no gradient reaches them.

Both models must share one vocabulary: a fresh student workdir gets a copy of the
teacher's tokenizers/ (`source_run.adopt_tokenizers`, before the task is built).
"""

import dataclasses
from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import models
from lmjax import parallel
from lmjax.train import losses
from lmjax.train import source_run


@dataclasses.dataclass(frozen=True)
class KD:
  """What the train step needs of the teacher besides its parameters (static).

  Attributes:
    teacher: the teacher's unbound module.
    weight: w in [0, 1].
    temperature: T > 0.
  """
  teacher: nn.Module
  weight: float
  temperature: float

  def logits(self, teacher_params, inputs) -> jnp.ndarray:
    """The teacher's logits (no dropout, no gradient) for a batch's model inputs."""
    out = self.teacher.apply({'params': teacher_params}, inputs, train=False)
    return jax.lax.stop_gradient(out)

  def mix(self, sums: Dict[str, jnp.ndarray], logits, teacher_logits,
          weights) -> Dict[str, jnp.ndarray]:
    """Loss sums with the KD term: loss = (1 − w)·loss + w·T²·Σ weight·KL; adds 'kd_kl'.

    Args:
      sums: `step.cross_entropy_sums` of the student.
      logits: the student's (..., V).
      teacher_logits: the teacher's (..., V).
      weights: (...) 0 on padding.

    Returns:
      The sums with 'loss' replaced and 'kd_kl' = Σ weight · KL added.
    """
    kl = jnp.sum(losses.kd_token_kl(logits, teacher_logits, self.temperature) * weights)
    t2 = self.temperature ** 2
    return dict(sums, loss=(1.0 - self.weight) * sums['loss'] + self.weight * t2 * kl, kd_kl=kl)


def enabled(config) -> bool:
  return config.train.kd_weight > 0


def load_teacher(config, task, dummy_batch, mesh, rules) -> Optional[Tuple[KD, Any, Any]]:
  """The frozen teacher of word-level KD, sharded like the student (None when off).

  Args:
    config: the student's config (its KD fields: config.train.kd_weight and the rest).
    task: the student's task (the vocabulary sizes the teacher is rebuilt with).
    dummy_batch: a batch of the student's shapes.
    mesh, rules: the student's mesh and logical-axis rules.

  Returns:
    (KD spec, teacher params on the mesh, their shardings), or None.

  Raises:
    ValueError: the teacher workdir, its config or checkpoint is missing, or its
      parameters do not fit the student's vocabulary.
  """
  if not enabled(config):
    return None
  workdir = config.train.kd_teacher_workdir
  field = 'config.train.kd_teacher_workdir'
  tconfig = source_run.read_config(workdir, field)
  try:
    teacher = models.build_model(tconfig.model, **task.model_sizes())
  except ValueError as e:
    raise ValueError(f'{field}={workdir!r}: its config.json does not build a model: {e}') from e
  rng = jax.random.key(0)
  boxed = jax.eval_shape(lambda: teacher.init({'params': rng, 'dropout': rng}, dummy_batch,
                                              train=False))['params']
  host, step = source_run.read_params(workdir, config.train.kd_teacher_checkpoint, field,
                                      'config.train.kd_teacher_checkpoint')
  source_run.check_fits(host, nn.meta.unbox(boxed), f'{field}={workdir!r}', step)
  shardings = parallel.logical_shardings(boxed, mesh, rules)
  params = jax.device_put(host, shardings)
  spec = KD(teacher, float(config.train.kd_weight), float(config.train.kd_temperature))
  return spec, params, shardings
