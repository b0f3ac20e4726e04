"""experiments/device_check.sh (issue 34): argument handling, settings, the loss check, and
one in-process run at the tiniest setting (the 300-step train run is left to the script)."""

import json
import os
import subprocess
import sys

import pytest

from lmjax.bench import device_check

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('options,flag', [
    (device_check.Options(mode='fast'), '--mode'),
    (device_check.Options(sections=['train', 'lstm']), '--sections'),
    (device_check.Options(sections=[]), '--sections'),
])
def test_bad_options_name_the_flag(options, flag):
  with pytest.raises(ValueError, match=flag):
    device_check.check_options(options)


def test_the_script_rejects_a_bad_section_before_running_anything():
  proc = subprocess.run(
      [os.path.join(REPO, 'experiments', 'device_check.sh'), '--sections=train,lstm'],
      env=dict(os.environ, PYTHON=sys.executable), capture_output=True, text=True, timeout=120,
      check=False)
  assert proc.returncode != 0
  assert "device_check: --sections: unknown ['lstm']" in proc.stderr
  assert 'Traceback' not in proc.stderr


def test_a_gpu_with_a_cpu_only_jax_is_an_error_not_a_cpu_pass(tmp_path):
  """nvidia-smi sees a GPU (faked here) but JAX's backend is the CPU: the check stops with
  one line naming the missing install, before measuring anything."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  fake = bin_dir / 'nvidia-smi'
  fake.write_text('#!/bin/sh\necho "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"\n')
  fake.chmod(0o755)
  env = dict(os.environ, PYTHON=sys.executable, PATH=f'{bin_dir}:{os.environ["PATH"]}')
  proc = subprocess.run([os.path.join(REPO, 'experiments', 'device_check.sh'), '--mode=tiny'],
                        env=env, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 3, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "JAX's backend is 'cpu'" in lines[0] and '[cuda12]' in lines[0]
  assert proc.stdout == ''


def test_auto_mode_is_quick_on_cpu_and_full_on_accelerators():
  assert device_check.setting_for('auto', 'cpu') == device_check.SETTINGS['quick']
  for platform in ('gpu', 'tpu'):
    assert device_check.setting_for('auto', platform) == device_check.SETTINGS['full']
  assert device_check.setting_for('tiny', 'gpu') == device_check.SETTINGS['tiny']
  # Both long settings run the step count the CPU reference loss was measured at.
  for mode in ('full', 'quick'):
    assert device_check.SETTINGS[mode].train_steps == device_check.TRAIN_RUN_STEPS
    assert device_check.SETTINGS[mode].shapes == ('small', 'base')


def test_loss_check_against_the_cpu_reference():
  ref, tol, steps = (device_check.CPU_REFERENCE_LOSS, device_check.LOSS_TOLERANCE,
                     device_check.TRAIN_RUN_STEPS)
  assert device_check.loss_check(ref, steps, '') is True
  assert device_check.loss_check(ref + 0.9 * tol, steps, '') is True
  assert device_check.loss_check(ref - 1.1 * tol, steps, '') is False
  assert device_check.loss_check(float('nan'), steps, '') is False
  assert device_check.loss_check(ref, 4, 'runlocal') is None  # no reference there


def test_bf16_rows_are_the_platforms_auto_precision():
  assert device_check.bf16_overrides('cpu') == {'model.matmul_dtype': 'bfloat16'}
  assert device_check.bf16_overrides('gpu')['model.dtype'] == 'bfloat16'
  assert device_check.torch_device('cpu') == 'cpu'
  assert device_check.torch_device('tpu') is None


def test_tiny_run_prints_the_table(tmp_path):
  lines = []
  result = device_check.run(device_check.Options(mode='tiny', sections=['matmul', 'train',
                                                                        'decode']),
                            log=lines.append)
  names = [r.name for r in result.report.rows]
  assert names == ['lmjax tiny bf16', 'lmjax decode beam2 tiny', 'lmjax decode greedy tiny']
  assert result.loss_ok is None and result.report.bf16_ceiling_gflops > 0
  assert result.report.rows[0].mfu_pct is not None
  text = device_check.format_result(result)
  for key in ('platform: cpu', 'device: ', 'peak bf16 matmul: ', 'mode: tiny', 'lmjax tiny bf16'):
    assert key in text
  assert len(lines) == 4  # the peak, then one line per row
  md, js = device_check.write_report(result, str(tmp_path / 'report'))
  with open(js) as f:
    data = json.load(f)
  assert [r['name'] for r in data['rows']] == names and data['loss_ok'] is None
  assert 'lmjax tiny bf16' in open(md).read()


def test_mfu_against_the_chips_nominal_peak():
  assert device_check.nominal_peak_tflops('NVIDIA H100 80GB HBM3') == 989.0
  assert device_check.nominal_peak_tflops('TPU v4') == 275.0
  assert device_check.nominal_peak_tflops('TPU v5 lite') == 197.0
  assert device_check.nominal_peak_tflops('TPU v5p') == 459.0
  assert device_check.nominal_peak_tflops('TPU v6 lite') == 918.0
  assert device_check.nominal_peak_tflops('cpu') is None
