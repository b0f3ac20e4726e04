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
teacher's tokenizers/ (`adopt_tokenizers`, before the task is built).
"""

import dataclasses
import json
from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from lmjax import fileio
from lmjax import models
from lmjax import parallel
from lmjax.train import checkpoint as ckpt_lib
from lmjax.train import losses


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


def adopt_tokenizers(config, workdir: str) -> None:
  """Copies the teacher's tokenizers/ into a student workdir that has none (KD only).

  The task then loads them instead of building its own, so teacher and student share
  one vocabulary; a student whose config.task.tokenizer differs is stopped by the
  task's own check.
  """
  if not enabled(config):
    return
  source = fileio.join(config.train.kd_teacher_workdir, 'tokenizers')
  target = fileio.join(workdir, 'tokenizers')
  if fileio.isdir(source) and not fileio.exists(target):
    staging = target + '.tmp'  # moved into place whole: a killed copy is never half a folder
    fileio.rmtree(staging)
    for name in fileio.files_under(source):
      fileio.makedirs(fileio.parent(fileio.join(staging, name)))
      fileio.write_bytes(fileio.join(staging, name), fileio.read_bytes(fileio.join(source, name)))
    fileio.move(staging, target)


def read_teacher_config(workdir: str) -> ml_collections.ConfigDict:
  """TEACHER/config.json; ValueError naming config.train.kd_teacher_workdir if unreadable."""
  path = fileio.join(workdir, 'config.json')
  try:
    return ml_collections.ConfigDict(json.loads(fileio.read_text(path)))
  except (OSError, ValueError) as e:
    raise ValueError(f'config.train.kd_teacher_workdir={workdir!r}: cannot read {path} ({e}); '
                     'give the --workdir of a trained run') from e


def read_teacher_params(workdir: str, checkpoint: str) -> Tuple[Any, int]:
  """The teacher's evaluation parameters as host arrays.

  Args:
    workdir: the teacher's run directory.
    checkpoint: 'latest', 'best' or a step number of checkpoints/last.

  Returns:
    (params: the moving average when the run kept one, else params; the step).
  """
  slot = 'best' if checkpoint == 'best' else 'last'
  directory = fileio.join(fileio.resolve(workdir), 'checkpoints', slot)
  where = f'config.train.kd_teacher_workdir={workdir!r}'
  if not fileio.isdir(directory):
    raise ValueError(f'{where}: no checkpoints in {directory}; train the teacher first')
  manager = ocp.CheckpointManager(directory, item_names=('state', 'meta'),
                                  options=ocp.CheckpointManagerOptions(create=False))
  try:
    incomplete = {int(n) for n in ckpt_lib.incomplete_steps(directory)}
    steps = sorted(s for s in manager.all_steps() if s not in incomplete)
    if checkpoint in ('latest', 'best'):
      step = steps[-1] if steps else None
    else:
      step = int(checkpoint) if checkpoint.isdigit() and int(checkpoint) in steps else None
    if step is None:
      raise ValueError(f'{where}: no checkpoint {checkpoint!r} in {directory} (steps: {steps}); '
                       "set config.train.kd_teacher_checkpoint to 'latest', 'best' or one of them")
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  finally:
    manager.close()
  params = state.get('ema_params') or state['params']
  return params, step


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
  tconfig = read_teacher_config(workdir)
  try:
    teacher = models.build_model(tconfig.model, **task.model_sizes())
  except ValueError as e:
    raise ValueError(f'config.train.kd_teacher_workdir={workdir!r}: its config.json does not '
                     f'build a model: {e}') from e
  rng = jax.random.key(0)
  boxed = jax.eval_shape(lambda: teacher.init({'params': rng, 'dropout': rng}, dummy_batch,
                                              train=False))['params']
  host, step = read_teacher_params(workdir, config.train.kd_teacher_checkpoint)
  got = {jax.tree_util.keystr(p): np.shape(x) for p, x in jax.tree_util.tree_leaves_with_path(host)}
  want = {jax.tree_util.keystr(p): x.shape
          for p, x in jax.tree_util.tree_leaves_with_path(nn.meta.unbox(boxed))}
  if got != want:
    diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))[:2]
    detail = ', '.join(f'{k}: checkpoint {got.get(k)} vs {want.get(k)}' for k in diff)
    raise ValueError(f'config.train.kd_teacher_workdir={workdir!r}: the teacher (step {step}) '
                     f'does not fit the vocabulary of this task ({detail}); the student must '
                     "use the teacher's tokenizers: start it in a fresh --workdir")
  shardings = parallel.logical_shardings(boxed, mesh, rules)
  params = jax.device_put(host, shardings)
  spec = KD(teacher, float(config.train.kd_weight), float(config.train.kd_temperature))
  return spec, params, shardings
