"""experiments/device_check.sh (issue 34): argument handling, settings, the loss check, and
one in-process run at the tiniest setting (the 300-step train run is left to the script)."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
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
  assert device_check.SETTINGS['quick'].shapes == ('small', 'base')
  # An accelerator also trains base at a batch that means something there (256 x (256 + 256)).
  assert device_check.SETTINGS['full'].shapes == ('small', 'base', 'large')
  large = device_check.shapes.TRANSFORMER_SHAPES['large']
  assert (large.batch_size, large.source_length, large.target_length) == (256, 256, 256)


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
  for key in ('platform: cpu', 'device: ', 'jaxlib: ', 'peak bf16 matmul: ', 'mode: tiny',
              'lmjax tiny bf16'):
    assert key in text
  assert result.ok and text.splitlines()[-1] == 'device_check: OK'
  assert len(lines) == 4  # the peak, then one line per row
  md, js = device_check.write_report(result, str(tmp_path / 'report'))
  with open(js) as f:
    data = json.load(f)
  assert [r['name'] for r in data['rows']] == names and data['loss_ok'] is None and data['ok']
  assert 'lmjax tiny bf16' in open(md).read()


def test_mfu_against_the_chips_nominal_peak():
  assert device_check.nominal_peak_tflops('NVIDIA H100 80GB HBM3') == 989.0
  assert device_check.nominal_peak_tflops('TPU v4') == 275.0
  assert device_check.nominal_peak_tflops('TPU v5 lite') == 197.0
  assert device_check.nominal_peak_tflops('TPU v5p') == 459.0
  assert device_check.nominal_peak_tflops('TPU v6 lite') == 918.0
  assert device_check.nominal_peak_tflops('cpu') is None


def test_kernel_matrix_passes_xla_and_catches_a_wrong_kernel(monkeypatch):
  """The attention matrix on CPU ('xla' vs 'reference', bf16): every case passes, the
  empty row included; a kernel that drops the causal mask, or returns NaN in a padding
  row, fails its rows."""
  from lmjax.bench import kernels  # pylint: disable=g-import-not-at-top
  from lmjax.models import attention_impls  # pylint: disable=g-import-not-at-top
  checks = kernels.matrix('cpu', head_dims=(32,), log=lambda line: None)
  assert [(c.impl, c.case) for c in checks] == [('xla', case) for case in kernels.CASES]
  assert all(c.ok and c.finite and c.fused is None for c in checks), checks
  mask, _, _ = kernels.case_mask('padding')
  assert not bool(mask.q_valid[-1].any())  # the empty row is there

  real = attention_impls.fused_attention
  no_causal = lambda q, k, v, mask, impl: real(q, k, v, mask.replace(causal=False), impl)
  monkeypatch.setattr(attention_impls, 'fused_attention', no_causal)
  assert not kernels.check('xla', 'causal', 32).ok

  def nan_padding(q, k, v, mask, impl):
    out = real(q, k, v, mask, impl)
    return jnp.where(mask.q_valid[:, :, None, None], out, jnp.nan)
  monkeypatch.setattr(attention_impls, 'fused_attention', nan_padding)
  bad = kernels.check('xla', 'padding', 32)
  assert not bad.finite and not bad.ok
  assert 'FAIL' in kernels.format_matrix([bad])


def test_missing_packages_are_one_line_naming_them_and_the_kit(tmp_path):
  """An interpreter without lmjax's dependencies (here: no site-packages at all, as on a
  bare accelerator image) gets one line naming them and the offline kit, no traceback."""
  bare = tmp_path / 'python'
  bare.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
  bare.chmod(0o755)
  proc = subprocess.run([os.path.join(REPO, 'experiments', 'device_check.sh'), '--mode=tiny'],
                        env=dict(os.environ, PYTHON=str(bare)), capture_output=True, text=True,
                        timeout=120, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and 'Python packages missing: jax flax' in lines[0], lines
  assert 'ml_collections' in lines[0] and 'prepare_device_kit.sh' in lines[0]


@pytest.mark.parametrize('args,message', [
    (['--python-version=312'], '--python-version must look like 3.12'),
    (['--bogus'], "unknown argument '--bogus'"),
])
def test_prepare_device_kit_rejects_bad_arguments(tmp_path, args, message):
  proc = subprocess.run([os.path.join(REPO, 'experiments', 'prepare_device_kit.sh'),
                         str(tmp_path / 'kit'), *args], capture_output=True, text=True,
                        timeout=60, check=False)
  assert proc.returncode == 2 and message in proc.stderr
  assert not (tmp_path / 'kit').exists()


def test_prepare_device_kit_keeps_an_existing_kit(tmp_path):
  (tmp_path / 'kit' / 'site').mkdir(parents=True)
  (tmp_path / 'kit' / 'site' / 'keep.txt').write_text('mine')
  proc = subprocess.run([os.path.join(REPO, 'experiments', 'prepare_device_kit.sh'),
                         str(tmp_path / 'kit')], capture_output=True, text=True, timeout=60,
                        check=False)
  assert proc.returncode == 2 and 'exists' in proc.stderr
  assert (tmp_path / 'kit' / 'site' / 'keep.txt').read_text() == 'mine'
