"""Two processes × 4 CPU devices (jax.distributed, gloo) train like one process × 8 devices.

Each process runs the real trainer: 2 steps, checkpoint, then a second call that
restores and resumes to step 3. Losses and final params must match a single-process
8-device run of the same config.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from configs import default
from lmjax.train import checkpoint as ckpt_lib
from lmjax.train import reporting
from lmjax.train import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 240

WORKER = textwrap.dedent('''
    import json, os, sys
    process_id, port, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import jax
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    from tests import multihost_test
    from lmjax import runtime
    config = multihost_test.tiny_config()
    config.distributed.enabled = True
    config.distributed.coordinator_address = f'localhost:{port}'
    config.distributed.num_processes = 2
    config.distributed.process_id = process_id
    runtime.setup(config)
    assert jax.process_count() == 2 and jax.local_device_count() == 4, jax.devices()
    from lmjax.train import loop
    loop.train_and_evaluate(config, workdir, stop_after_steps=2)  # then "interrupted"
    metrics = loop.train_and_evaluate(config, workdir)  # restores step 2, resumes to 3
    print('RESULT ' + json.dumps({k: float(v) for k, v in metrics.items()}), flush=True)
''')


def tiny_config():
  config = default.get_config('runlocal')
  config.train.num_train_steps = 3
  config.train.log_every = 1
  config.train.eval_every = 3
  config.train.checkpoint_every = 2
  config.optimizer.warmup_steps = 1
  config.train.async_checkpointing = False
  config.task.num_eval = 16
  config.eval.batch_size = 16
  config.eval.num_samples = 0
  return config


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def run_two_processes(workdir, tmp_path):
  script = tmp_path / 'worker.py'
  script.write_text(WORKER)
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=4 '
                       '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true')
  port = str(free_port())
  procs = [subprocess.Popen([sys.executable, str(script), str(i), port, workdir], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outputs = []
  try:
    for p in procs:
      out, _ = p.communicate(timeout=TIMEOUT_S)
      outputs.append(out)
  except subprocess.TimeoutExpired:
    pytest.fail(f'multi-host training did not finish in {TIMEOUT_S} s')
  finally:
    for p in procs:  # never leave a process waiting for its peer
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-4000:]
  return [json.loads(next(l for l in out.splitlines() if l.startswith('RESULT '))[7:])
          for out in outputs]


def train_losses(workdir):
  records = reporting.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  return [(r['step'], r['loss']) for r in records if r['split'] == 'train']


def test_two_processes_resume_and_match_one_process(tmp_path):
  assert jax.device_count() == 8
  multi, single = str(tmp_path / 'multi'), str(tmp_path / 'single')
  results = run_two_processes(multi, tmp_path)
  ref = loop.train_and_evaluate(tiny_config(), single)

  assert results[0] == results[1]  # every process computes the same global eval metrics
  for k, v in ref.items():
    np.testing.assert_allclose(results[0][k], v, rtol=1e-4, atol=1e-5, err_msg=k)
  (s_multi, l_multi), (s_single, l_single) = zip(*train_losses(multi)), zip(*train_losses(single))
  assert s_multi == s_single == (1, 2, 3)  # written once (process 0), history kept over the resume
  np.testing.assert_allclose(l_multi, l_single, rtol=1e-5, atol=1e-5)
  params_multi, step = ckpt_lib.load_params(multi)
  assert step == 3
  for a, b in zip(jax.tree.leaves(params_multi), jax.tree.leaves(ckpt_lib.load_params(single)[0])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
