"""Checkpoints restore on any topology: one reader, onto the current mesh.

A run saved on 8 simulated devices (this process) resumes on 4 devices with its
parameters and optimizer state bit-identical, and trains on; warm start
(config.train.init_from) and the word-level KD teacher read it into a run on 1 device
and into a 2-process run, bit-identical. (Resume from 2 processes to 1:
tests/pod_test.py.) Before the one reader, the warm start and teacher restored without
a target, which needs the saving run's device ids: the 1-device run failed.
"""

import json
import os
import shutil

import numpy as np

from lmjax.train import loop
from tests import pod_test
from tests import pod_worker

SOURCE_STEPS = 4


def source_overrides():
  return {'task.num_train': 400, 'task.num_eval': 16, 'eval.batch_size': 16,
          'train.num_train_steps': SOURCE_STEPS, 'train.checkpoint_every': SOURCE_STEPS,
          'train.eval_every': SOURCE_STEPS, 'train.log_every': 2, 'eval.num_samples': 0,
          'optimizer.warmup_steps': 2, 'train.async_checkpointing': False}


def job_config(overrides):
  return {'base': 'default', 'overrides': overrides}


def build(overrides):
  return pod_worker.build_config(job_config(overrides))


def loaded(outputs):
  return [json.loads(line[len('LOADED '):]) for _, out in outputs for line in out.splitlines()
          if line.startswith('LOADED ')]


def test_a_checkpoint_of_8_devices_resumes_on_4_and_seeds_runs_on_1_device_and_2_processes(tmp_path):
  source = str(tmp_path / 'source')
  loop.train_and_evaluate(build(source_overrides()), source)  # 8 devices, 1 process
  # What the saving topology restores: the reference for every other topology.
  trainer = loop.Trainer(build(source_overrides()), source)
  trainer.restore_latest()
  np.savez(tmp_path / 'state.npz', **{k: np.asarray(v) for k, v in
                                      pod_worker.restored_arrays(trainer, 'state').items()})
  params = pod_worker.restored_arrays(trainer, 'init')
  np.savez(tmp_path / 'init.npz', **{k: np.asarray(v) for k, v in params.items()},
           **{'teacher' + k[len('params'):]: np.asarray(v) for k, v in params.items()})

  # Resume on 4 devices: the restored state is the saved one; then it trains on.
  resumed = str(tmp_path / 'resumed')
  shutil.copytree(source, resumed)
  longer = dict(source_overrides(), **{'train.num_train_steps': SOURCE_STEPS + 2})
  outs = pod_test.launch([
      dict(kind='load', config=job_config(longer), workdir=resumed, what='state',
           path=str(tmp_path / 'state.npz')),
      dict(kind='train', config=job_config(longer), workdir=resumed)],
      tmp_path, 'four_devices', processes=1, devices=4)
  assert loaded(outs) == [{'identical': True, 'arrays': len(np.load(tmp_path / 'state.npz')),
                           'devices': 4}]
  assert 'RESUMED 4' in outs[0][1]
  assert sorted(os.listdir(os.path.join(resumed, 'checkpoints', 'last')))[-1] == '6'

  # Warm start and KD teacher from the 8-device run: on 1 device, and on 2 processes.
  fine_tune = dict(source_overrides(), **{
      'train.init_from': source, 'train.kd_weight': 0.5, 'train.kd_teacher_workdir': source})
  for name, processes, devices in (('one_device', 1, 1), ('two_processes', 2, 4)):
    outs = pod_test.launch([dict(kind='load', config=job_config(fine_tune),
                                 workdir=str(tmp_path / name), what='init',
                                 path=str(tmp_path / 'init.npz'))],
                           tmp_path, name, processes=processes, devices=devices)
    assert loaded(outs) == [{'identical': True, 'arrays': 2 * len(params),
                             'devices': processes * devices}] * processes, name
