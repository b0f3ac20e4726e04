"""A simulated pod resumes exactly: 2 `jax.distributed` processes × 4 CPU devices (gloo).

For pack and bucket batching and the stateful LSTM LM's token stream (with its TBPTT
carry), one run is stopped and resumed in two new processes, from the checkpoints on disk:

    launch 1: the uninterrupted run (12 steps) | the run, SIGTERM at step 5 (saves at 6)
    launch 2: resumes (pack: process 1 alone fails to read step 6, so both fall back to
              step 4); pack and bucket: SIGKILLed at step 9 (newest checkpoint: 8)
    launch 3: (pack and bucket) resumes to step 12

Its final parameters must be bit-identical to the uninterrupted run's, and every
process must have drawn, at every step, the same rows (example digests logged by
tests/pod_worker.py) as that process in the uninterrupted run. On the code before
per-process data positions, pack mode fails both (process 1 resumed with process 0's
position and pending example).

The same checkpoints then serve the process-count checks: pack refuses a resume on one
process with one line; the other modes resume on one process (8 devices): bucket restores
the parameters and optimizer state the two processes saved bit for bit, and every mode
carries its data position over exactly (the rows equal the two processes' rows together)
and ends where the two processes ended (N processes equal one).
"""

import json
import os
import shutil
import socket
import sys
import time

import jax
import numpy as np
import pytest

from lmjax.train import checkpoint as ckpt_lib
from lmjax.train import loop
from tests import pod_worker
from tests import scripts
from tests import stream_test

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 300
STEPS = 12

# Worker processes: 4 CPU devices each, the suite's quick-compile flags.
WORKER_XLA_FLAGS = ('--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true '
                    '--xla_cpu_use_fusion_emitters=false')


def common_overrides():
  return {'train.num_train_steps': STEPS, 'train.log_every': 2, 'train.checkpoint_every': 4,
          'train.eval_every': STEPS, 'train.async_checkpointing': False,
          'optimizer.warmup_steps': 2, 'eval.num_samples': 0}


def mode_config(mode, data):
  """The job config of a mode (see tests/pod_worker.py)."""
  overrides = common_overrides()
  if mode == 'lm':
    overrides.update({'task.num_train': 400, 'task.num_eval': 40})
    return {'base': 'lm', 'overrides': overrides}
  overrides.update({'task.batching.mode': mode, 'eval.batch_size': 16})
  if mode == 'bucket':
    overrides.update({'task.batching.bucket_lengths': [8, 16], 'task.batching.max_tokens': 256,
                      'task.batching.window': 64})
  return {'base': 'corpus', 'data': data, 'overrides': overrides}


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def launch(jobs, tmp_path, name, processes=2, devices=4, expect_ok=True):
  """Runs tests/pod_worker.py in `processes` processes; returns [(returncode, output)].

  When one process dies (SIGKILL), the others are killed after a grace period, as a
  pod's scheduler would: they may be waiting for it in a collective.
  """
  spec = tmp_path / f'{name}.json'
  spec.write_text(json.dumps({'port': free_port(), 'num_processes': processes,
                              'jobs': jobs}))
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices} {WORKER_XLA_FLAGS}')
  logs = [str(tmp_path / f'{name}.{i}.log') for i in range(processes)]
  procs = [scripts.start([sys.executable, os.path.join(REPO, 'tests', 'pod_worker.py'),
                          str(spec), str(i)], logs[i], cwd=REPO, env=env)
           for i in range(processes)]
  deadline, grace_end = time.time() + TIMEOUT_S, None
  try:
    while any(p.poll() is None for p in procs):
      now = time.time()
      if grace_end is None and any(p.poll() not in (None, 0) for p in procs):
        grace_end = now + 10
      if now > deadline or (grace_end is not None and now > grace_end):
        break
      time.sleep(0.1)
  finally:
    for p in procs:
      p.kill()
  outputs = []
  for path in logs:
    with open(path) as f:
      outputs.append(f.read())
  if expect_ok:
    for p, out in zip(procs, outputs):
      assert p.returncode == 0 and 'DONE' in out, f'{name}: exit {p.returncode}\n{out[-4000:]}'
  assert time.time() <= deadline, f'{name} did not finish in {TIMEOUT_S} s'
  return [(p.returncode, out) for p, out in zip(procs, outputs)]


def read_record(prefix, process):
  """{step: row digests} of one process; a step drawn again after a resume overrides."""
  steps = {}
  with open(f'{prefix}.{process}.jsonl') as f:
    for line in f:
      r = json.loads(line)
      steps[r['step']] = r['rows']
  return steps


def resumed_at(output):
  return [int(line.split()[1]) for line in output.splitlines() if line.startswith('RESUMED ')]


def assert_params_identical(a_dir, b_dir):
  a, step_a = ckpt_lib.load_params(a_dir)
  b, step_b = ckpt_lib.load_params(b_dir)
  assert step_a == step_b == STEPS
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  return stream_test.write_corpus(str(tmp_path_factory.mktemp('pod_data')), num_train=600)


# Plain batching (one global position, as bucket's) is covered by bucket here and by
# tests/topology_test.py's two-process runs of the in-memory task.
@pytest.mark.parametrize('mode', ['pack', 'bucket', 'lm'])
def test_two_processes_stopped_by_sigterm_and_sigkill_resume_exactly(mode, corpus, tmp_path):
  config = mode_config(mode, corpus)
  ref, run = str(tmp_path / 'ref'), str(tmp_path / 'run')
  fault = 6 if mode == 'pack' else None  # process 1 alone cannot read the newest checkpoint
  # pack and bucket: SIGTERM, then SIGKILL. The LM stream (positions the same on every
  # host, as bucket's): SIGTERM only, to keep the suite short.
  kill = mode in ('pack', 'bucket')

  dump = [] if mode != 'bucket' else [  # the state as the saving topology restores it
      dict(kind='dump', config=config, workdir=ref, what='state', path=str(tmp_path / 'ref.npz'))]
  launch([dict(kind='train', config=config, workdir=ref, record=ref), *dump,
          dict(kind='train', config=config, workdir=run, record=run, signal_at=5, signal='TERM')],
         tmp_path, 'launch1')
  assert ckpt_lib.complete_steps(run) == [4, 6]  # SIGTERM: saved at the next sync step
  after_sigterm = str(tmp_path / 'after_sigterm')
  shutil.copytree(run, after_sigterm)

  second = dict(kind='train', config=config, workdir=run, record=run, fault_step=fault)
  if kill:
    second.update(signal_at=9, signal='KILL')
  outs = launch([second], tmp_path, 'launch2', expect_ok=not kill)
  for _, out in outs:  # every process resumed from the same step
    assert resumed_at(out) == [4 if fault else 6], out[-3000:]
  if fault:
    assert len(os.listdir(os.path.join(run, 'checkpoints', 'damaged'))) == 1
  if kill:
    assert ckpt_lib.complete_steps(run)[-1] == 8  # the SIGKILL came after step 8's save
    outs = launch([dict(kind='train', config=config, workdir=run, record=run)], tmp_path,
                  'launch3')
    for _, out in outs:
      assert resumed_at(out) == [8], out[-3000:]

  assert_params_identical(ref, run)
  for process in range(2):
    want, got = read_record(ref, process), read_record(run, process)
    assert sorted(want) == sorted(got) == list(range(1, STEPS + 1))
    for step in want:
      assert got[step] == want[step], (process, step)
  # Every process drew its own rows (in pack mode: its own examples).
  assert read_record(ref, 0)[1] != read_record(ref, 1)[1]

  # The same checkpoint (step 6, written by 2 processes) resumed by one process.
  with pod_worker.hooks({'record': str(tmp_path / 'one')}):
    if mode == 'pack':
      with pytest.raises(ValueError, match=r"batching.mode='pack' keeps a data position per "
                                           r'process .* written by 2 processes and this run has 1'):
        loop.train_and_evaluate(pod_worker.build_config(config), after_sigterm)
      return
    if dump:
      trainer = loop.Trainer(pod_worker.build_config(config), ref)
      trainer.restore_latest()  # parameters and optimizer state exactly as 2 processes saved them
      saved = np.load(tmp_path / 'ref.npz')
      restored = pod_worker.restored_arrays(trainer, 'state')
      assert sorted(restored) == sorted(saved)
      for name, value in restored.items():
        np.testing.assert_array_equal(np.asarray(value), saved[name], err_msg=name)
    loop.train_and_evaluate(pod_worker.build_config(config), after_sigterm)
  got = read_record(str(tmp_path / 'one'), 0)
  assert sorted(got) == list(range(7, STEPS + 1))
  for step in got:  # one process draws exactly what the two drew together
    assert got[step] == read_record(ref, 0)[step] + read_record(ref, 1)[step], step
  # ... and computes what they computed (N processes equal one, to float32 reduction order).
  one, _ = ckpt_lib.load_params(after_sigterm)
  two, _ = ckpt_lib.load_params(ref)
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_with_fallback_off_a_read_failure_on_one_process_stops_every_process(corpus, tmp_path):
  config = mode_config('bucket', corpus)
  config['overrides'].update({'train.num_train_steps': 4, 'train.checkpoint_every': 2,
                              'train.eval_every': 4})
  run = str(tmp_path / 'run')
  loop.train_and_evaluate(pod_worker.build_config(config), run)  # here: 1 process, 8 devices
  config['overrides'].update({'train.num_train_steps': 6, 'train.checkpoint_fallback': False})
  before = sorted(os.listdir(os.path.join(run, 'checkpoints', 'last')))
  start = time.time()
  outs = launch([dict(kind='train', config=config, workdir=run, fault_step=4,
                      error_file=str(tmp_path / 'error'))], tmp_path, 'resume', expect_ok=False)
  assert time.time() - start < 120  # nobody waits for the others
  for i, (code, out) in enumerate(outs):
    assert code == 1, out[-3000:]
    message = (tmp_path / f'error.{i}').read_text()
    assert '\n' not in message and 'checkpoint' in message and f'{os.sep}4' in message, message
  assert 'process(es) [1]' in (tmp_path / 'error.0').read_text()
  assert 'injected read fault' in (tmp_path / 'error.1').read_text()
  assert sorted(os.listdir(os.path.join(run, 'checkpoints', 'last'))) == before  # nothing moved
