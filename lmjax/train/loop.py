"""`train_and_evaluate(config, workdir)`: the one training loop for every model and task."""

import functools
import json
import os
import signal
import threading
import time
from typing import Any, Dict, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from lmjax.config import configlib
from lmjax import fileio
from lmjax import parallel
from lmjax.train import reporting
from lmjax.data import pipeline
from lmjax.data import tasks
from lmjax.train import checkpoint as ckpt_lib
from lmjax.train import compose
from lmjax.train import evaluation
from lmjax.train import guard
from lmjax.train import source_run
from lmjax import optim
from lmjax.train import pretrained
from lmjax.train import state as state_lib
from lmjax.train import step as step_lib


def prepare_workdir(workdir: str) -> None:
  """Creates the workdir and checks that it is writable (clear error otherwise).

  Raises:
    ValueError: the workdir cannot be created or written (its path and the reason: a
      read-only folder, a bucket without access, no network, gcsfs not installed...).
  """
  try:
    fileio.check_url(workdir, '--workdir')
    fileio.makedirs(workdir)
    probe = fileio.join(workdir, f'.write_probe_{os.getpid()}')
    fileio.write_text(probe, 'ok')
    fileio.remove(probe)
  except fileio.PathError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (each backend raises its own kinds)
    reason = getattr(e, 'strerror', None) or fileio.first_line(e)
    raise ValueError(f'--workdir {workdir} is not writable ({reason}): choose a directory '
                     'or bucket you can write to') from e


def save_config(config, workdir: str, step: int) -> None:
  """Writes WORKDIR/config.json; a resumed run with another config keeps the old file."""
  path = fileio.join(workdir, 'config.json')
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  if fileio.exists(path):
    if fileio.read_text(path) == text:
      return
    path = fileio.join(workdir, f'config.resumed_at_{step}.json')
  try:
    fileio.write_text(path, text)
  except OSError as e:
    raise guard.write_error(e, path, 'config file') from e


class PreemptionWatcher:
  """Turns SIGTERM (preemption, Cloud TPU maintenance, `kill`) into a checkpoint and a clean exit.

  The handler only sets a flag; the loop saves at the next step boundary. With
  several processes the flag is combined over all of them every `sync_every` steps,
  so every host stops at the same step.
  """

  def __init__(self):
    self.flag = False
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.flag = True

  def requested(self, step: int, sync_every: int) -> bool:
    if jax.process_count() == 1:
      return self.flag
    if step % sync_every:
      return False
    return bool(np.any(multihost_utils.process_allgather(np.array(self.flag))))

  def restore(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def encode_sums(sums: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
  """Metric sums (scalar arrays) → JSON: {name: [dtype, value]} (exact for float32)."""
  if sums is None:
    return None
  return {k: [str(np.asarray(v).dtype), np.asarray(v).item()] for k, v in jax.device_get(sums).items()}


def decode_sums(encoded: Optional[Dict[str, Any]]) -> Optional[Dict[str, np.ndarray]]:
  """Inverse of `encode_sums`."""
  if not encoded:
    return None
  return {k: np.asarray(v, dtype=dtype) for k, (dtype, v) in encoded.items()}


class Trainer:
  """Holds what one run builds once: task, model, mesh, compiled steps, checkpointer."""

  def __init__(self, config, workdir: str):
    configlib.validate(config, check_paths=True)
    prepare_workdir(workdir)
    self.config, self.workdir = config, workdir
    self.is_main = jax.process_index() == 0
    self.mesh = parallel.create_mesh(config.mesh, dcn=config.get('mesh_dcn'))
    self.rules = parallel.rules_from_config(config)
    parallel.check_batch_divisible(config.train.batch_size, self.mesh, self.rules, 'config.train.batch_size')
    parallel.check_batch_divisible(config.eval.batch_size, self.mesh, self.rules, 'config.eval.batch_size')
    source_run.adopt_tokenizers(config, workdir)  # KD teacher's or warm-start source's vocabulary
    self.task = tasks.build_task(config.task, workdir)
    dummy = pipeline.pad_batch([self.task.train_example(0)], self.task.lengths, config.train.batch_size)
    parts = compose.compose(config, self.task, dummy, self.mesh, self.rules)
    self.model, self.tx, self.objective = parts.model, parts.tx, parts.objective
    evaluation.check_best_metric(config, self.objective)
    state, shardings = state_lib.create_sharded_state(
        self.model, self.tx, dummy, config.seed, self.mesh, self.rules,
        ema=config.train.get('ema_decay', 0.0) > 0)
    self.batch_sharding = parallel.batch_sharding(self.mesh, self.rules)
    # What the objective carries from batch to batch (an LSTM LM's state under truncated
    # BPTT) is part of the TrainState, so it is checkpointed with it.
    self.state, self.shardings = self.objective.add_state(state, shardings, config.train.batch_size,
                                                          self.batch_sharding)
    # Extra step arguments (a distillation teacher's parameters): inputs, not constants.
    self.step_args, step_arg_shardings = self.objective.step_args()
    self.train_step = parallel.RulesJit(
        functools.partial(step_lib.train_step, objective=self.objective, tx=self.tx,
                          grad_accum_steps=config.train.grad_accum_steps,
                          ema_decay=config.train.get('ema_decay', 0.0),
                          batch_sharding=self.batch_sharding,
                          grad_shardings=self.shardings.params), self.mesh, self.rules,
        in_shardings=(self.shardings, self.batch_sharding, *step_arg_shardings),
        out_shardings=(self.shardings, parallel.replicated(self.mesh)), donate_argnums=0)
    self.evaluator = evaluation.Evaluator(self.task, self.objective, config, self.mesh,
                                          self.batch_sharding, self.shardings.params)
    self.checkpointer = ckpt_lib.Checkpointer(workdir, config.train.keep_checkpoints,
                                              config.train.async_checkpointing)
    self.train_iter = self.objective.train_iterator(self.task, config.train.batch_size,
                                                    config.data_seed, jax.process_index(),
                                                    jax.process_count())
    self.meta: Dict[str, Any] = {'best': None, 'best_step': None, 'bad_evals': 0,
                                 'nonfinite_run': 0}
    self.guard = guard.NonFiniteGuard(config.train.nonfinite, config.train.max_nonfinite_steps)
    self.log_window: Optional[Dict[str, np.ndarray]] = None  # restored partial log window

  def restore_latest(self) -> int:
    """Resumes from the latest complete checkpoint if there is one. Returns the step.

    A fresh run (no checkpoint) instead starts from config.train.init_from's parameters, or
    else gets its pretrained word vectors, if configured.
    """
    abstract = ckpt_lib.abstract_like(self.state, self.shardings)
    latest, state, meta, data_states = self.checkpointer.restore_newest_good(
        abstract, self.config.train.checkpoint_fallback)
    if latest is None:
      report = fileio.join(self.workdir, 'init_report.json') if self.is_main else ''
      self.state, warm = source_run.warm_start(self.state, self.shardings, self.config, report)
      if warm:
        if self.is_main:
          print(warm, flush=True)
      elif self.config.task.get('tokenizer', {}).get('vectors', ''):
        self.state, found = pretrained.load_word_vectors(self.state, self.task, self.config.task)
        if self.is_main:
          print(f'Word vectors {self.config.task.tokenizer.vectors}: {found} of '
                f'{self.task.model_sizes()["vocab_size"]} vocabulary words', flush=True)
      return 0
    self.state = state
    # Each process continues from its own position (or a mapped one: another process count).
    self.train_iter.restore_states(data_states)
    self.meta = {k: meta[k] for k in ('best', 'best_step', 'bad_evals')}
    # Checkpoints written before the non-finite guard existed lack the count.
    self.meta['nonfinite_run'] = int(meta.get('nonfinite_run', 0))
    self.guard.run = self.meta['nonfinite_run']
    self.log_window = decode_sums(meta.get('log_window'))
    logging.info('Resumed from %s at step %d', self.checkpointer.directory, latest)
    return latest

  def checkpoint(self, best: bool = False, log_window: Optional[Dict[str, Any]] = None) -> None:
    """Saves state + bookkeeping (raises guard.NonFiniteError for non-finite params).

    `log_window`: the metric sums of the steps since the last train log, saved so that
    a resumed run logs the same window averages as an uninterrupted one.
    """
    self.meta['nonfinite_run'] = self.guard.run
    meta = dict(self.meta, log_window=encode_sums(log_window))
    self.checkpointer.save(self.state, meta, self.train_iter.get_state(), best=best)

  def check_finite(self, boundary: bool) -> None:
    """Reads the steps' `skipped` flags; raises guard.NonFiniteError past the limit.

    Args:
      boundary: read every flag, the newest step's too (before logging, evaluating or
        checkpointing); otherwise the newest is left to run on.
    """
    stop_step = self.guard.resolve(everything=boundary)
    if stop_step is not None:
      self.checkpointer.wait()
      raise guard.NonFiniteError(guard.nonfinite_message(
          stop_step, self.guard.run, self.config, self.checkpointer.latest_path()))

  def abort(self) -> None:
    """After an error: lets background saves finish (so they are complete, not partial)."""
    try:
      self.checkpointer.close()
    except Exception as e:  # pylint: disable=broad-except  (the first error is the one raised)
      logging.warning('while stopping: %s', e)

  def improved(self, value: float) -> bool:
    best = self.meta['best']
    if best is None:
      return True
    return value > best if self.config.train.best_mode == 'max' else value < best


def train_and_evaluate(config, workdir: str, stop_after_steps: Optional[int] = None) -> Dict[str, float]:
  """Trains `config` in `workdir`, resuming from its latest complete checkpoint if any.

  Args:
    config: experiment ConfigDict (see configs/default.py for every field).
    workdir: run directory (checkpoints, metrics.jsonl, tensorboard/, tokenizers/, plots).
    stop_after_steps: stop (with a checkpoint) once this many steps are done in total,
      before num_train_steps — simulates an interruption or a time-sliced job.

  Returns:
    The final eval metrics.

  Raises:
    configlib.ConfigError: invalid config values or missing data files.
    guard.NonFiniteError: too many consecutive non-finite steps, or non-finite params.
    guard.WriteError: a checkpoint or metrics.jsonl could not be written.
  """
  t0 = time.time()
  workdir = fileio.resolve(workdir)
  trainer = Trainer(config, workdir)
  writer = None
  try:
    start = trainer.restore_latest()
    writer = reporting.MetricWriter(workdir, enabled=trainer.is_main, resume_step=start)
    save_config(config, workdir, start)
    step, eval_metrics, preempted = _train(trainer, writer, start, stop_after_steps)
    return _finish(trainer, writer, step, eval_metrics, preempted, t0)
  except BaseException:
    trainer.abort()
    if writer is not None:
      writer.close()
    raise
  finally:
    trainer.train_iter.close()  # Grain worker processes


def _train(trainer: Trainer, writer: reporting.MetricWriter, start: int,
           stop_after_steps: Optional[int]):
  """The step loop: train, log, evaluate, checkpoint. Returns (step, eval metrics, preempted)."""
  config, cfg = trainer.config, trainer.config.train
  total = cfg.num_train_steps if stop_after_steps is None else min(cfg.num_train_steps, stop_after_steps)
  logging.info('Devices: %d (%s); mesh %s; steps %d → %d', jax.device_count(),
               jax.devices()[0].platform, dict(trainer.mesh.shape), start, total)
  bar = reporting.progress(cfg.num_train_steps, start, trainer.is_main)
  sums, t_log, stopped_early = trainer.log_window, time.time(), False
  # Scored tokens of the log window, over all processes: the step's global `weight` sum
  # (less what a restored partial window already held).
  weight_before = 0.0 if sums is None else float(sums['weight'])
  eval_metrics: Dict[str, float] = {}
  step = start
  preemption, preempted = PreemptionWatcher(), False
  try:
    while step < total:
      local = next(trainer.train_iter)
      batch = parallel.to_global(local, trainer.batch_sharding)
      trainer.state, m = trainer.train_step(trainer.state, batch, *trainer.step_args)
      sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
      step += 1
      bar.update(1)
      # stop_after_steps is an interruption: its partial log window goes into the checkpoint.
      at_log = step % cfg.log_every == 0 or step == cfg.num_train_steps
      at_eval = step % cfg.eval_every == 0 or step == cfg.num_train_steps
      at_checkpoint = step % cfg.checkpoint_every == 0 or step == total
      trainer.guard.observe(step, m['skipped'])
      trainer.check_finite(boundary=at_log or at_eval or at_checkpoint)
      if at_log:
        host_sums = jax.device_get(sums)
        summary = trainer.objective.summarize(host_sums)
        summary['grad_norm'] = float(m['grad_norm'])
        elapsed = time.time() - t_log
        summary['tokens_per_sec'] = (float(host_sums['weight']) - weight_before) / max(elapsed, 1e-9)
        summary['learning_rate'] = float(optim.make_schedule(config.optimizer, cfg.num_train_steps)(step - 1))
        writer.write(step, 'train', summary)
        bar.set_postfix(loss=f"{summary['loss']:.3f}", tok_s=f"{summary['tokens_per_sec']:.0f}")
        sums, weight_before, t_log = None, 0.0, time.time()
      if at_eval:
        eval_metrics = trainer.evaluator.evaluate(trainer.state.eval_params,
                                                  iw=step >= cfg.num_train_steps)
        writer.write(step, 'eval', eval_metrics)
        value = eval_metrics[cfg.best_metric]
        if trainer.improved(value):
          trainer.meta.update(best=value, best_step=step, bad_evals=0)
          trainer.checkpoint(best=True)
        else:
          trainer.meta['bad_evals'] += 1
        bar.write(f'step {step}: ' + ', '.join(f'{k}={v:.4g}' for k, v in eval_metrics.items()))
        if cfg.early_stopping_patience and trainer.meta['bad_evals'] >= cfg.early_stopping_patience:
          bar.write(f'early stopping at step {step}: no {cfg.best_metric} improvement in '
                    f'{trainer.meta["bad_evals"]} evals')
          stopped_early = True
      if at_checkpoint or stopped_early:
        trainer.checkpoint(log_window=sums)
      if stopped_early:
        break
      if preemption.requested(step, cfg.log_every):
        trainer.check_finite(boundary=True)
        trainer.checkpoint(log_window=sums)
        bar.write(f'SIGTERM: saved a checkpoint at step {step}; rerun the same command to resume')
        preempted = True
        break
  finally:
    preemption.restore()
    bar.close()
  return step, eval_metrics, preempted


def _finish(trainer: Trainer, writer: reporting.MetricWriter, step: int,
            eval_metrics: Dict[str, float], preempted: bool, t0: float) -> Dict[str, float]:
  """Final eval and samples, waits for the checkpoints, writes summary.json and the plot."""
  config, workdir, cfg = trainer.config, trainer.workdir, trainer.config.train
  if not eval_metrics and not preempted:  # a preempted job has seconds left: only save
    eval_metrics = trainer.evaluator.evaluate(trainer.state.eval_params)
  samples = [] if preempted else trainer.evaluator.samples(trainer.state.eval_params,
                                                            config.eval.num_samples)
  writer.write_text(step, 'samples', '\n\n'.join(samples))
  trainer.checkpointer.close()
  writer.flush()
  writer.close()
  if trainer.is_main:
    plot = reporting.plot_curves(writer.path, fileio.join(workdir, 'curves.png'))
    summary = {'step': step, 'wall_time_sec': round(time.time() - t0, 1), **eval_metrics,
               'best': trainer.meta['best'], 'best_step': trainer.meta['best_step']}
    _write_json(fileio.join(workdir, 'summary.json'), summary)
    print('\n'.join(['', '=' * 60, f'Finished at step {step} in {summary["wall_time_sec"]} s '
                     f'(workdir {workdir})'] +
                    [f'  eval {k}: {v:.4f}' for k, v in eval_metrics.items()] +
                    [f'  best {cfg.best_metric}: {trainer.meta["best"]} at step {trainer.meta["best_step"]}',
                     f'  curves: {plot}', '  samples:'] + [f'    {s}' for s in samples] + ['=' * 60]))
  return eval_metrics


def _write_json(path: str, value: Any) -> None:
  """Writes JSON atomically (a crash leaves the old file); WriteError naming `path`."""
  try:
    fileio.write_text(path, json.dumps(value, indent=2))
  except OSError as e:
    raise guard.write_error(e, path, 'file') from e
