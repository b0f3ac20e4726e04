"""evaluate.py / decode.py with --quantize: a trained run in int8 (qwix post-training
quantization, `lmjax.models.quantization`).

    run = quantized.QuantizedRun(workdir, mode='int8')
    params, info = run.restore('best')          # float checkpoint → int8 tree on the mesh
    report = run.evaluate(params, info, beam_size=5)

The float checkpoint is read as for float evaluation, quantized once (absmax weights,
one scale per output channel) and every decoder and eval step then runs the qwix model.
"""

from typing import Any, Callable, Dict, Optional

import jax

from lmjax import models
from lmjax import parallel
from lmjax.data import pipeline
from lmjax.tools import param_report
from lmjax.tools import workdir_tools
from lmjax.tools.inference import DecodeOptions, Run, ToolError, stderr_warning
from lmjax.models import quantization


def check_mode(mode: str) -> None:
  """ToolError naming --quantize unless `mode` is one of quantization.MODES."""
  if mode not in quantization.MODES:
    raise ToolError(f"--quantize={mode!r}: expected 'none' (float), "
                    + ' or '.join(map(repr, quantization.MODES)))


class QuantizedRun(Run):
  """A `Run` whose decoders and evaluator run qwix's int8 model on int8 parameters.

  Attributes (besides Run's):
    mode: a value of quantization.MODES.
    float_stats: `param_report` of the float parameters last restored, int8 bytes included.
  """

  def __init__(self, workdir: str, split: str = 'eval', mode: str = 'int8'):
    check_mode(mode)
    super().__init__(workdir, split)
    self.mode = mode
    model_config = dict(self.config.model)
    if model_config.get('matmul_dtype'):  # bf16 matmuls are custom kernels qwix cannot see
      model_config['matmul_dtype'] = ''
    self.model = quantization.ptq_model(models.build_model(model_config, **self.task.model_sizes()),
                                        mode)
    first = self.task.eval_examples[0] if self.task.eval_examples else self.task.train_example(0)
    self._abstract = quantization.abstract_params(
        self.model, pipeline.pad_batch([first], self.task.lengths, 1))
    self._float_shardings = self.param_shardings
    self.param_shardings = parallel.logical_shardings(self._abstract, self.mesh,
                                                      parallel.rules_from_config(self.config))
    self.float_stats: Optional[Dict[str, Any]] = None

  def restore(self, checkpoint: str = 'latest', average_last: int = 0):
    """Run.restore's float parameters, quantized onto the mesh. Returns (params, info)."""
    quantized = self.param_shardings
    self.param_shardings = self._float_shardings  # where Run.restore places the checkpoint
    try:
      params, info = super().restore(checkpoint, average_last)
    finally:
      self.param_shardings = quantized
    qparams = jax.jit(lambda p: quantization.quantize_params(p, self._abstract),
                      out_shardings=quantized)(params)
    self.float_stats = param_report.param_report(params, qparams)
    return qparams, info

  def evaluate(self, params, info, split: str = 'eval', beam_size: int = 1,
               alpha: float = 0.6) -> Dict[str, Any]:
    """Run.evaluate in int8; report['params'] describes the float parameters and their
    int8 bytes, report['quantization'] names the mode."""
    report = super().evaluate(params, info, split, beam_size, alpha)
    report['quantization'] = self.mode
    if self.float_stats is not None:
      report['params'] = self.float_stats
    return report


def evaluate_workdir(workdir: str, checkpoint: str = 'latest', average_last: int = 0,
                     split: str = 'eval', beam_size: int = 1, alpha: float = 0.6,
                     output: str = '', outside_bias: Optional[float] = None,
                     mode: str = 'int8') -> Dict[str, Any]:
  """`workdir_tools.evaluate_workdir` in int8 (no --ensemble); same arguments and report,
  written to WORKDIR/eval_<checkpoint>_<split>[_beamK][_outsideB]_<mode>.json by default."""
  check_mode(mode)
  return workdir_tools.evaluate_workdir(
      workdir, checkpoint, average_last, split, beam_size, alpha, output, outside_bias,
      run_factory=lambda w, s: QuantizedRun(w, s, mode), output_suffix=f'_{mode}')


def decode_file(workdir: str, input_path: str = '-', output_path: str = '-',
                options: DecodeOptions = DecodeOptions(), checkpoint: str = 'latest',
                warn: Callable[[str], None] = stderr_warning, encoding_errors: str = 'strict',
                mode: str = 'int8') -> int:
  """`workdir_tools.decode_file` with the int8 model; same arguments. Returns lines written."""
  check_mode(mode)
  return workdir_tools.decode_file(workdir, input_path, output_path, options, checkpoint, warn,
                                   encoding_errors,
                                   run_factory=lambda w, s: QuantizedRun(w, s, mode))
