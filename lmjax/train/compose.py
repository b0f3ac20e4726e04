"""What a run is made of, chosen in one place from its config.

    model      models.build_model, wrapped for quantization-aware training
               (config.train.quantization: qwix fake-quantized int8 matmuls);
    tx         the optimizer (config.optimizer), followed by magnitude pruning
               (config.train.pruning.sparsity > 0), frozen where config.train.freeze says;
    objective  lmjax.objectives.registry.build (config.train.objective, or derived from the
               model and task), wrapped by word-level distillation with its frozen
               teacher (config.train.kd_weight > 0).

The trainer and the tools take these parts and never test a feature flag themselves.
"""

import dataclasses

import flax.linen as nn
import jax
import optax

from lmjax import models
from lmjax import parallel
from lmjax.objectives import base
from lmjax.objectives import kd
from lmjax.objectives import registry
from lmjax import optim
from lmjax.train import pruning
from lmjax.models import quantization
from lmjax.train import source_run


@dataclasses.dataclass
class Parts:
  """The model, optimizer and objective of a run."""
  model: nn.Module
  tx: optax.GradientTransformation
  objective: base.Objective


def model_for(config, task) -> nn.Module:
  """The run's model, QAT-wrapped when config.train.quantization is set."""
  model = models.build_model(config.model, **task.model_sizes())
  if config.train.get('quantization', ''):
    model = quantization.qat_model(model, config.train.quantization)
  return model


def optimizer_for(config) -> optax.GradientTransformation:
  """config.optimizer's optimizer, followed by pruning when config.train.pruning asks, with
  zero updates for the parameters config.train.freeze names."""
  steps = config.train.num_train_steps
  tx = pruning.from_config(optim.make_optimizer(config.optimizer, steps),
                           config.train.pruning, steps)
  return optim.freeze(tx, list(config.train.get('freeze', [])))


def objective_for(config, task, model, dummy_batch, mesh, rules) -> base.Objective:
  """The registry's objective, wrapped by word-level KD when config.train.kd_weight > 0."""
  objective = registry.build(config, task, model)
  if config.train.kd_weight > 0:
    objective = kd.Distillation(objective, *load_teacher(config, task, dummy_batch, mesh, rules),
                                config.train.kd_weight, config.train.kd_temperature)
  return objective


def compose(config, task, dummy_batch, mesh, rules) -> Parts:
  """Every part of a run (module docstring).

  Args:
    config: the experiment config.
    task: the built task.
    dummy_batch: a batch of the training shapes (the KD teacher's init).
    mesh, rules: the run's mesh and logical-axis rules (the teacher is placed on them).
  """
  model = model_for(config, task)
  return Parts(model, optimizer_for(config),
               objective_for(config, task, model, dummy_batch, mesh, rules))


def load_teacher(config, task, dummy_batch, mesh, rules):
  """The frozen teacher of word-level KD, sharded like the student.

  Args:
    config: the student's config (config.train.kd_teacher_workdir, kd_teacher_checkpoint).
    task: the student's task (the vocabulary sizes the teacher is rebuilt with).
    dummy_batch: a batch of the student's shapes.
    mesh, rules: the student's mesh and logical-axis rules.

  Returns:
    (teacher module, its params on the mesh, their shardings).

  Raises:
    ValueError: the teacher workdir, its config or checkpoint is missing, or its
      parameters do not fit the student's vocabulary.
  """
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
  return teacher, jax.device_put(host, shardings), shardings
