"""One process of a simulated pod: `python tests/pod_worker.py SPEC.json PROCESS_ID`.

Started N times by tests/pod_test.py and tests/topology_test.py (jax.distributed on
localhost, gloo collectives, CPU devices set by XLA_FLAGS). SPEC holds the coordinator
port, the process count and a list of jobs run in order:

  {'kind': 'train', 'config': {...}, 'workdir': W, 'record': PREFIX,
   'signal_at': K, 'signal': 'TERM'|'KILL', 'fault_step': S, 'error_file': F}
      trains W (`loop.train_and_evaluate`). Every batch this process draws is logged to
      PREFIX.<process>.jsonl as {'step', 'rows'}: one digest per row (its example ids).
      At batch K the process sends itself SIGTERM (preemption) or SIGKILL (a crash).
      With fault_step, process 1 alone fails to read checkpoint S. A ValueError is
      written to F and the process exits 1, as experiments/train.py does.
  {'kind': 'load' | 'dump', 'config': {...}, 'workdir': W, 'what': 'state' | 'init',
   'path': NPZ}
      builds the trainer and restores it (a resume, or a warm start + KD teacher), then
      prints whether its arrays (`restored_arrays`) are bit-identical to those in NPZ
      ('load'), or writes them there ('dump').

'config' is {'base': 'corpus' (stream_test.corpus_config, 'data': ROOT) | 'lm'
(configs/dates_lm_lstm.py:runlocal) | 'default' (configs/default.py:runlocal),
'overrides': {dotted field: value}}.
"""

import contextlib
import hashlib
import json
import os
import signal
import sys


def build_config(spec):
  """The experiment config of a job's 'config' entry."""
  if spec['base'] == 'corpus':
    from tests import stream_test  # pylint: disable=g-import-not-at-top
    config = stream_test.corpus_config(spec['data'])
  elif spec['base'] == 'lm':
    from configs import dates_lm_lstm  # pylint: disable=g-import-not-at-top
    config = dates_lm_lstm.get_config('runlocal')
  else:
    from configs import default  # pylint: disable=g-import-not-at-top
    config = default.get_config('runlocal')
  config.update_from_flattened_dict(spec.get('overrides', {}))
  return config


def row_digests(batch):
  """One short digest per batch row over every field (identifies the examples in it)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  keys = sorted(batch)
  rows = len(batch[keys[0]])
  return [hashlib.sha1(b''.join(np.ascontiguousarray(batch[k][r]).tobytes() for k in keys))
          .hexdigest()[:12] for r in range(rows)]


class Recorder:
  """Wraps the trainer's iterator: logs each batch's row digests, sends the stop signal."""

  def __init__(self, inner, path, signal_at, sig):
    self.inner, self.path, self.signal_at, self.sig = inner, path, signal_at, sig
    self.step = 0  # batches drawn: set to the resumed step by restore_latest

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self.inner)
    self.step += 1
    with open(self.path, 'a') as f:
      f.write(json.dumps({'step': self.step, 'rows': row_digests(batch)}) + '\n')
    if self.step == self.signal_at:
      os.kill(os.getpid(), self.sig)
    return batch

  def __getattr__(self, name):  # get_state, restore_states, close: the iterator's own
    return getattr(self.inner, name)


@contextlib.contextmanager
def hooks(job):
  """Patches the trainer for the job described by the dict `job` (read at call time):
  the Recorder around its iterator, 'RESUMED <step>' on stdout, process 1's read fault."""
  import jax  # pylint: disable=g-import-not-at-top
  from lmjax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from lmjax.train import loop  # pylint: disable=g-import-not-at-top
  original_init, original_restore = loop.Trainer.__init__, loop.Trainer.restore_latest
  original_read = getattr(ckpt_lib, 'read_state', None)  # (None: code before the one reader)

  def init(self, config, workdir):
    original_init(self, config, workdir)
    if job.get('record'):
      sig = signal.SIGKILL if job.get('signal') == 'KILL' else signal.SIGTERM
      self.train_iter = Recorder(self.train_iter, f"{job['record']}.{jax.process_index()}.jsonl",
                                 job.get('signal_at'), sig)

  def restore_latest(self):
    start = original_restore(self)
    if isinstance(self.train_iter, Recorder):
      self.train_iter.step = start
    print(f'RESUMED {start}', flush=True)
    return start

  def read_state(step_dir, *args, **kwargs):
    if (job.get('fault_step') is not None and jax.process_index() == 1
        and os.path.basename(step_dir.rstrip('/')) == str(job['fault_step'])):
      raise OSError(f'injected read fault in {step_dir} (process 1 only)')
    return original_read(step_dir, *args, **kwargs)

  loop.Trainer.__init__, loop.Trainer.restore_latest = init, restore_latest
  if original_read is not None:
    ckpt_lib.read_state = read_state
  try:
    yield
  finally:
    loop.Trainer.__init__, loop.Trainer.restore_latest = original_init, original_restore
    if original_read is not None:
      ckpt_lib.read_state = original_read


def main():
  spec = json.load(open(sys.argv[1]))
  process_id = int(sys.argv[2])
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if spec['num_processes'] > 1:
    jax.distributed.initialize(f"localhost:{spec['port']}", num_processes=spec['num_processes'],
                               process_id=process_id)
  jax.config.update('jax_threefry_partitionable', True)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from lmjax.train import loop  # pylint: disable=g-import-not-at-top

  job = {}
  with hooks(job):
    for current in spec['jobs']:
      job.clear()
      job.update(current)
      run_job(job, loop, jax, np)
  print('DONE', flush=True)


def run_job(job, loop, jax, np):
  """Runs one job of the spec (see the module docstring)."""
  config = build_config(job['config'])
  if job['kind'] == 'train':
    try:
      loop.train_and_evaluate(config, job['workdir'])
    except ValueError as e:
      if not job.get('error_file'):
        raise
      with open(f"{job['error_file']}.{jax.process_index()}", 'w') as f:
        f.write(str(e))
      print(f'error (ValueError): {e}', flush=True)
      sys.exit(1)
    return
  trainer = loop.Trainer(config, job['workdir'])  # 'load' or 'dump'
  trainer.restore_latest()
  flat = {k: np.asarray(v) for k, v in restored_arrays(trainer, job['what']).items()}
  if job['kind'] == 'dump':
    if jax.process_index() == 0:
      np.savez(job['path'], **flat)
    return
  expect = dict(np.load(job['path']))
  same = sorted(flat) == sorted(expect) and all(np.array_equal(v, expect[k]) for k, v in flat.items())
  print('LOADED ' + json.dumps({'identical': bool(same), 'arrays': len(flat),
                                'devices': jax.device_count()}), flush=True)


def restored_arrays(trainer, what):
  """Named arrays of a trainer after `restore_latest`: 'state' (the whole TrainState) or
  'init' (the parameters and the KD teacher's). Every device of a data-parallel run
  holds the whole (replicated) arrays, so one device's copy is the array."""
  import jax  # pylint: disable=g-import-not-at-top
  trees = {'state': trainer.state} if what == 'state' else {'params': trainer.state.params}
  if what == 'init' and trainer.step_args:
    trees['teacher'] = trainer.step_args[0]  # the KD teacher's parameters
  return {f'{name}{jax.tree_util.keystr(path)}': leaf.addressable_data(0)
          for name, tree in trees.items()
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


if __name__ == '__main__':  # Grain's worker processes import this file again
  main()
