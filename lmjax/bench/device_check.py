"""`experiments/device_check.sh`: what one accelerator (or this CPU) does with lmjax, in one run.

Sections, in run order:
  kernels    the attention kernel matrix: every fused impl of the platform vs 'reference'
             in bf16 (padding with an empty row, causal, cross, packed 64/192; head_dim
             32/64/128; forward and gradients finite; the fused kernel in the program):
             lmjax/bench/kernels.py
  matmul     the device's peak bf16 (and f32) matmul GFLOP/s, one large jitted `jnp.dot`
  train      the benchmark's small and base train steps in bf16, with MFU against that peak
  torch      PyTorch on the same shapes (bf16 autocast; nn.Transformer runs
             scaled_dot_product_attention), on the same device: CUDA on GPU, CPU on CPU
  decode     beam (and greedy) decode tokens/s
  train_run  300 steps of configs/default.py through the trainer, its final eval loss
             compared with the CPU reference below (within LOSS_TOLERANCE)

bf16 means what `config.model.dtype='auto'` gives on the platform: on TPU/GPU bfloat16
activations (params and optimizer float32) and `attention_impl='auto'` (splash / cuDNN);
on CPU float32 activations with bfloat16 matmul operands (`model.matmul_dtype`), the
CPU's fast mixed precision.
"""

import dataclasses
import datetime
import json
import os
import re
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax

from lmjax import platforms
from lmjax import runtime
from lmjax.config import configlib
from lmjax.bench import decode
from lmjax.bench import jax_train
from lmjax.bench import kernels
from lmjax.bench import shapes
from lmjax.bench import suite
from lmjax.bench import table
from lmjax.bench import timing

SECTIONS = ('kernels', 'matmul', 'train', 'torch', 'decode', 'train_run')
# Nominal dense bf16 peak of each chip, TFLOP/s (vendor data sheets): MFU is also printed
# against it, beside the measured matmul. Matched as substrings of `device_kind`, first hit.
NOMINAL_BF16_TFLOPS = (('H100', 989.0), ('H200', 989.0), ('A100', 312.0),
                       ('TPU v6', 918.0), ('TPU v5 lite', 197.0), ('TPU v5e', 197.0),
                       ('TPU v5p', 459.0), ('TPU v5', 459.0), ('TPU v4', 275.0))
MODES = ('auto', 'full', 'quick', 'tiny')

# Final eval loss (nll) of `train_run` at 300 steps on CPU (dtype 'auto' = float32,
# attention 'auto' = reference): 0.07424, measured by `experiments/device_check.sh
# --sections=train_run` (JAX 0.10.2, 2 AMD EPYC cores, 2026-12-05) and by the same run in a
# script. Other settings of the same run: seed 1 0.0771, seed 2 0.0775, model.dtype=bfloat16
# 0.0733, matmul_dtype=bfloat16 0.0745, attention_impl=xla 0.0739 (all within 0.0033).
CPU_REFERENCE_LOSS = 0.0742
# |loss - CPU_REFERENCE_LOSS| allowed: ~6x that spread; a broken path (no learning, NaN,
# a wrong mask) lands far outside it.
LOSS_TOLERANCE = 0.02
TRAIN_RUN_STEPS = 300


@dataclasses.dataclass(frozen=True)
class Setting:
  """Sizes of one mode.

  Attributes:
    shapes: train shapes (keys of shapes.TRANSFORMER_SHAPES).
    kernel_head_dims: head_dims of the attention kernel matrix.
    steps: timed train steps per row; warmup: untimed steps after compiling.
    matmul_size: side of the peak-FLOP/s matmul; matmul_repeats: timed calls.
    decode_shape: key of shapes.DECODE_SHAPES; decode_steps: timed decode calls.
    train_config: `get_config` argument of configs/default.py for train_run.
    train_steps: train_run steps (the loss is checked only at TRAIN_RUN_STEPS of '').
  """
  shapes: Sequence[str]
  steps: int
  warmup: int
  matmul_size: int
  matmul_repeats: int
  decode_shape: str
  decode_steps: int
  train_config: str
  train_steps: int
  kernel_head_dims: Sequence[int] = kernels.HEAD_DIMS


SETTINGS = {
    # One accelerator, <= 4 minutes.
    'full': Setting(('small', 'base', 'large'), steps=10, warmup=2, matmul_size=8192, matmul_repeats=10,
                    decode_shape='small', decode_steps=5, train_config='',
                    train_steps=TRAIN_RUN_STEPS),
    # 2 CPU cores, <= 3 minutes: the same rows, fewer timed steps, a smaller matmul.
    'quick': Setting(('small', 'base'), steps=2, warmup=1, matmul_size=2048, matmul_repeats=3,
                     decode_shape='small', decode_steps=2, train_config='',
                     train_steps=TRAIN_RUN_STEPS),
    # The smoke test (tests/device_check_test.py): tiny shapes, no loss reference.
    'tiny': Setting(('tiny',), steps=1, warmup=0, matmul_size=128, matmul_repeats=1,
                    decode_shape='tiny', decode_steps=1, train_config='runlocal', train_steps=4,
                    kernel_head_dims=(32,)),
}


@dataclasses.dataclass
class Options:
  """What to run: `mode` (MODES; 'auto' = 'full' on TPU/GPU, 'quick' on CPU), `sections`."""
  mode: str = 'auto'
  sections: Sequence[str] = SECTIONS


@dataclasses.dataclass
class Result:
  """The report (info, ceilings, rows), the attention kernel checks and the train_run loss
  check (None if not run)."""
  report: table.Report
  loss_ok: Optional[bool] = None
  loss_line: str = ''
  kernel_checks: List[kernels.Check] = dataclasses.field(default_factory=list)

  @property
  def ok(self) -> bool:
    """No kernel check failed and the loss check did not fail."""
    return all(c.ok for c in self.kernel_checks) and self.loss_ok is not False


def check_options(options: Options) -> None:
  """Raises ValueError naming --mode or --sections and their valid values."""
  if options.mode not in MODES:
    raise ValueError(f'--mode={options.mode!r}: expected one of {", ".join(MODES)}')
  unknown = sorted(set(options.sections) - set(SECTIONS))
  if unknown or not options.sections:
    raise ValueError(f'--sections: unknown {unknown or "(none given)"}; valid: {", ".join(SECTIONS)}')


def setting_for(mode: str, platform: str) -> Setting:
  """The Setting of `mode`; 'auto' is 'full' on an accelerator and 'quick' on CPU."""
  if mode == 'auto':
    mode = 'quick' if platform == 'cpu' else 'full'
  return SETTINGS[mode]


def bf16_overrides(platform: str) -> Dict[str, Any]:
  """Config overrides of the bf16 rows (see the module docstring)."""
  if platform == 'cpu':
    return {'model.matmul_dtype': 'bfloat16'}
  return {'model.dtype': 'bfloat16', 'model.matmul_dtype': '', 'model.attention_impl': 'auto'}


def torch_device(platform: str) -> Optional[str]:
  """'cpu' on CPU, 'cuda' on a GPU that the installed torch can use, else None."""
  if platform == 'cpu':
    return 'cpu'
  if platform == 'gpu' and suite.torch_available():
    import torch  # pylint: disable=g-import-not-at-top  (optional extra)
    return 'cuda' if torch.cuda.is_available() else None
  return None


def loss_check(loss: float, steps: int, config_arg: str) -> Optional[bool]:
  """True/False: `loss` is within LOSS_TOLERANCE of the CPU reference; None: no reference."""
  if steps != TRAIN_RUN_STEPS or config_arg:
    return None
  return abs(loss - CPU_REFERENCE_LOSS) <= LOSS_TOLERANCE


def train_run(setting: Setting) -> Tuple[table.Row, float]:
  """Trains configs/default.py for `setting.train_steps` steps in a temporary workdir.

  Returns:
    (row 'train configs/default.py, N steps': target tokens/s of the trainer's last log
    window (after compiling), the wall time with data, compile and eval in the note;
    the final eval loss).
  """
  # pylint: disable=g-import-not-at-top  (the trainer, only for this section)
  from lmjax.train import loop
  from lmjax.train import reporting
  config = configlib.repo_config('default.py', setting.train_config)
  t = config.train
  t.num_train_steps = t.eval_every = t.checkpoint_every = setting.train_steps
  t.log_every = max(1, setting.train_steps // 3)
  config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, setting.train_steps)
  start = time.perf_counter()
  with tempfile.TemporaryDirectory(prefix='device_check_') as workdir:
    metrics = loop.train_and_evaluate(config, workdir)
    logs = [r for r in reporting.read_jsonl(f'{workdir}/metrics.jsonl') if r['split'] == 'train']
  seconds = time.perf_counter() - start
  loss = float(metrics['loss'])
  m = config.model
  dtype = platforms.resolve_dtype(m.dtype)
  attention = platforms.resolve_attention_impl(m.attention_impl, dtype=dtype,
                                               head_dim=m.qkv_dim // m.num_heads)
  arg = f':{setting.train_config}' if setting.train_config else ''
  return table.Row(
      name=f'train configs/default.py{arg}, {setting.train_steps} steps',
      tokens_per_s=logs[-1]['tokens_per_sec'] if logs else None,
      note=f'eval loss {loss:.4f}; {seconds:.0f} s in all (data, compile, eval); '
      f'dtype {dtype}, attention {attention}; tok/s of steps '
      f'{setting.train_steps - t.log_every + 1}-{setting.train_steps}'), loss


def nominal_peak_tflops(device_kind: str) -> Optional[float]:
  """The chip's nominal dense bf16 TFLOP/s (NOMINAL_BF16_TFLOPS), None when not listed."""
  return next((tf for key, tf in NOMINAL_BF16_TFLOPS if key in device_kind), None)


def write_report(result: 'Result', folder: str) -> Tuple[str, str]:
  """Writes the report to `folder` (created): device_check.md (the info lines, the table
  and the loss check) and device_check.json (`Report.as_dict()` plus the loss check).

  Returns:
    (Markdown path, JSON path).
  """
  os.makedirs(folder, exist_ok=True)
  md, js = os.path.join(folder, 'device_check.md'), os.path.join(folder, 'device_check.json')
  data = dict(result.report.as_dict(), loss_ok=result.loss_ok, loss_line=result.loss_line,
              kernels=[c.as_dict() for c in result.kernel_checks], ok=result.ok)
  with open(js, 'w', encoding='utf-8') as f:
    json.dump(data, f, indent=2)
    f.write('\n')
  with open(md, 'w', encoding='utf-8') as f:
    f.write('# experiments/device_check.sh\n\n```\n' + format_result(result) + '\n```\n')
  return md, js


def _flops(gflops: float) -> str:
  return f'{gflops / 1e3:.1f} TFLOP/s' if gflops >= 1e3 else f'{gflops:.1f} GFLOP/s'


def device_info(platform: str, mode: str) -> Dict[str, Any]:
  """Platform, device, versions and the date, printed above the table."""
  info = {'date': datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
          'platform': platform,
          'device': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
          'jax': jax.__version__, 'mode': mode}
  info.update(environment_probe())
  if suite.torch_available():
    import torch  # pylint: disable=g-import-not-at-top  (optional extra)
    info['torch'] = torch.__version__
  else:
    info['torch'] = 'not installed (pip install .[bench])'
  return info


def environment_probe() -> Dict[str, str]:
  """jaxlib, the backend's platform version, and on NVIDIA hosts cuDNN and the driver version."""
  # pylint: disable=g-import-not-at-top
  import jaxlib
  info = {'jaxlib': jaxlib.__version__,
          'backend': f'{jax.default_backend()} ({getattr(jax.devices()[0].client, "platform_version", "?")})'}
  try:
    from jax._src.lib import cuda_versions  # the CUDA plugin's versions (GPU builds only)
    if cuda_versions is not None:
      info['cudnn'] = str(cuda_versions.cudnn_get_version())
  except Exception:  # pylint: disable=broad-except  (private API: absent or moved)
    pass
  try:  # the kernel module's version line names the driver (NVIDIA hosts only)
    with open('/proc/driver/nvidia/version', encoding='utf-8') as f:
      found = re.search(r'Kernel Module\s+(\S+)', f.read())
    if found:
      info['driver'] = found.group(1)
  except OSError:
    pass
  return info


def run(options: Options, log: Callable[[str], None] = print) -> Result:
  """Runs the selected sections.

  Args:
    options: mode and sections.
    log: progress lines (one per finished row).

  Returns:
    The Result.
  """
  check_options(options)
  runtime.setup(configlib.repo_config('default.py'))  # the process set-up of experiments/train.py
  platform = platforms.backend()
  setting = setting_for(options.mode, platform)
  mode = options.mode if options.mode != 'auto' else ('quick' if platform == 'cpu' else 'full')
  sections = set(options.sections)
  report = table.Report(device_info(platform, mode), ceiling_gflops=0.0)
  result = Result(report)
  if 'kernels' in sections:
    result.kernel_checks = kernels.matrix(platform, head_dims=setting.kernel_head_dims, log=log)

  nominal = nominal_peak_tflops(jax.devices()[0].device_kind)
  report.info['nominal bf16 peak'] = (f'{nominal:g} TFLOP/s (dense, data sheet)' if nominal
                                      else 'not listed for this device')

  def add(row: table.Row) -> table.Row:
    if nominal and row.gflop_per_s and row.precision == 'bfloat16':
      row.note = (row.note + '; ' if row.note else '') + (
          f'MFU {100.0 * row.gflop_per_s / (nominal * 1e3):.1f} % of the nominal peak')
    log(f'[device_check] {row.name}: {row.tokens_per_s or 0:.0f} tok/s; {row.note}')
    return report.add(row)

  if sections & {'matmul', 'train', 'torch', 'decode'}:
    for precision in timing.PRECISIONS:
      gflops = timing.matmul_ceiling(setting.matmul_size, setting.matmul_repeats, precision)
      report.set_ceiling(gflops, precision)
    report.info['peak bf16 matmul'] = (
        f'{_flops(report.bf16_ceiling_gflops)} measured ({setting.matmul_size}x'
        f'{setting.matmul_size} jnp.dot, bf16 operands, f32 result; f32: '
        f'{_flops(report.ceiling_gflops)})')
    log(f'[device_check] peak bf16 matmul: {report.info["peak bf16 matmul"]}')
  overrides = bf16_overrides(platform)
  device = torch_device(platform)
  for name in setting.shapes:
    shape = shapes.TRANSFORMER_SHAPES[name]
    ours = theirs = None
    if 'train' in sections:
      ours = add(jax_train.transformer_row(shape, setting.steps, setting.warmup, overrides,
                                           'bfloat16'))
    if 'torch' in sections:
      if device is None:
        theirs = add(table.Row(f'torch {name} bf16', precision='bfloat16',
                               note=f'no PyTorch device for {platform} here'))
      else:
        theirs = add(suite.torch_transformer_row(shape, setting.steps, setting.warmup,
                                                 'bfloat16', device))
    if ours is not None and theirs is not None and theirs.tokens_per_s:
      ours.vs_torch = ours.tokens_per_s / theirs.tokens_per_s
  if 'decode' in sections:
    decode_overrides = {} if platform == 'cpu' else overrides
    for row in decode.rows(shapes.DECODE_SHAPES[setting.decode_shape], setting.decode_steps, 0,
                           decode_overrides):
      row.precision = 'bfloat16' if decode_overrides else 'float32'
      add(row)
  if 'train_run' in sections:
    row, loss = train_run(setting)
    add(row)
    result.loss_ok = loss_check(loss, setting.train_steps, setting.train_config)
    if result.loss_ok is None:
      result.loss_line = f'train loss check: none at this setting (eval loss {loss:.4f})'
    else:
      verdict = 'OK' if result.loss_ok else 'FAILED'
      result.loss_line = (f'train loss check: {verdict}: eval loss {loss:.4f} vs CPU reference '
                          f'{CPU_REFERENCE_LOSS:.4f} +- {LOSS_TOLERANCE} ({TRAIN_RUN_STEPS} steps '
                          'of configs/default.py)')
  return result


def format_result(result: Result) -> str:
  """The attention kernel matrix, the report's table (lmjax.bench.table), the loss-check
  line, and the verdict last."""
  parts = [kernels.format_matrix(result.kernel_checks)] if result.kernel_checks else []
  parts.append(table.format_report(result.report))
  if result.loss_line:
    parts.append(result.loss_line)
  failed = [f'{c.impl} {c.case} head_dim {c.head_dim}' for c in result.kernel_checks if not c.ok]
  verdict = 'device_check: ' + ('OK' if result.ok else 'FAILED')
  if failed:
    verdict += f' ({len(failed)} attention kernel checks failed: {", ".join(failed[:4])}'
    verdict += ', ...)' if len(failed) > 4 else ')'
  parts.append(verdict)
  return '\n'.join(parts)

