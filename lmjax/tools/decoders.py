"""experiments/decode.py's one entry point: the run's kind picks its decoder.

A sentence VAE (config.model.kind='vae') reconstructs, samples or interpolates
(`lmjax.tools.vae_decode`); every other run translates, generates, classifies or tags
(`lmjax.tools.workdir_tools.decode_file`), optionally in int8 (`lmjax.tools.quantized`).
"""

from typing import Callable

from lmjax.tools import inference
from lmjax.tools import quantized
from lmjax.tools import vae_decode
from lmjax.tools import workdir_tools


def decode_workdir(workdir: str, input_path: str, output_path: str,
                   options: inference.DecodeOptions, checkpoint: str = 'latest', *,
                   encoding_errors: str = 'strict', num_samples: int = 0, interpolate: int = 0,
                   quantize: str = 'none',
                   warn: Callable[[str], None] = inference.stderr_warning) -> int:
  """Decodes `input_path` into `output_path` with the decoder of `workdir`'s run.

  Args:
    workdir: the trained run.
    input_path, output_path: one line per sentence ('-' = stdin / stdout).
    options: decoding options.
    checkpoint: 'latest', 'best', 'averaged' or a step.
    encoding_errors: 'strict' or 'replace'.
    num_samples, interpolate: VAE runs only (prior samples; latent-path points).
    quantize: 'none', 'int8' or 'int8_weights' (not for VAE runs).
    warn: receives warnings.

  Returns:
    Number of lines written.

  Raises:
    inference.ToolError: a flag that does not apply to this run.
  """
  vae = num_samples or interpolate or vae_decode.is_vae_workdir(workdir)
  if quantize != 'none':
    if vae:
      raise inference.ToolError('--quantize does not apply to a VAE run; drop it')
    return quantized.decode_file(workdir, input_path, output_path, options, checkpoint,
                                 encoding_errors=encoding_errors, mode=quantize)
  if vae:
    return vae_decode.decode_file(workdir, input_path, output_path, options, checkpoint,
                                  num_samples=num_samples, interpolate_steps=interpolate,
                                  encoding_errors=encoding_errors, warn=warn)
  return workdir_tools.decode_file(workdir, input_path, output_path, options, checkpoint,
                                   warn=warn, encoding_errors=encoding_errors)
