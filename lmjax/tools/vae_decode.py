"""Text from a trained sentence VAE: prior samples, reconstructions and homotopies.

    run = inference.Run(workdir); params, _ = run.restore('best')
    prior_samples(run, params, 10, seed=0)            # z ~ N(0, I), decoded greedily
    reconstruct(run, params, ['the market fell'])     # z = posterior mean, decoded greedily
    interpolate(run, params, 'a b', 'c d', steps=5)   # z on the line between two means

Bowman et al. (2016) decode greedily from z (their Tables 3-5); so does this module.
`experiments/decode.py` calls `decode_file` for VAE workdirs.
"""

import sys
from typing import Callable, List, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lmjax import fileio
from lmjax.data import tokenizers as tok_lib
from lmjax.decoding import decode
from lmjax.decoding import predict
from lmjax.tools import inference
from lmjax.tools import workdir_tools
from lmjax.tools.workdir import ToolError, load_config, stderr_warning


def is_vae_workdir(workdir: str) -> bool:
  """Whether `workdir` holds a VAE run (False when its config cannot be read)."""
  try:
    return load_config(workdir).model.get('kind') == 'vae'
  except ToolError:
    return False


def greedy_from_latents(model, params, z: jnp.ndarray, max_length: int) -> jnp.ndarray:
  """Greedy decoding of latents z (B, Z). Returns (B, max_length) ids, 0 after EOS."""
  rows = z.shape[0]
  cache = predict.init_cache(model, params, z, None, rows, max_length)
  step_fn = predict.make_step_fn(model, params, z, None, max_length)
  return decode.greedy(step_fn, cache, rows, max_length, tok_lib.EOS_ID)


class VAEDecoder:
  """A VAE run's compiled encoder (sentences → posterior means) and greedy latent decoder."""

  def __init__(self, run: inference.Run, params, max_length: int = 0, batch_size: int = 64):
    if run.config.model.kind != 'vae':
      raise ToolError(f'{run.workdir} has config.model.kind={run.config.model.kind!r}: prior '
                      'samples, reconstructions and --interpolate need a VAE run (kind=vae)')
    self.run, self.params = run, params
    self.length = run.task.lengths['targets']
    self.max_length = max_length or run.config.eval.decode_max_length or self.length
    self.rows = run.round_rows(batch_size)
    model = run.model
    self._mean = jax.jit(lambda p, x: model.apply({'params': p}, x, method='encode'),
                         in_shardings=(run.param_shardings, run.batch_sharding),
                         out_shardings=run.batch_sharding)
    self._decode = jax.jit(lambda p, z: greedy_from_latents(model, p, z, self.max_length),
                           in_shardings=(run.param_shardings, run.batch_sharding),
                           out_shardings=run.batch_sharding)

  def _batched(self, fn, array: np.ndarray) -> np.ndarray:
    """Applies fn(params, rows) to `array` in padded batches of `self.rows`; returns its rows."""
    out = []
    for start in range(0, len(array), self.rows):
      part = array[start:start + self.rows]
      padded = np.zeros((self.rows,) + part.shape[1:], part.dtype)
      padded[:len(part)] = part
      result = fn(self.params, jax.device_put(padded, self.run.batch_sharding))
      out.append(np.asarray(jax.device_get(result))[:len(part)])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)

  def encode(self, lines: Sequence[str], warn: Callable[[str], None] = stderr_warning) -> np.ndarray:
    """Posterior means (N, Z) of sentences (tokens + EOS, cut at the training length)."""
    tok = self.run.task.tokenizers['targets']
    ids = np.zeros((len(lines), self.length), np.int32)
    for i, line in enumerate(lines):
      row = tok.encode(line) + [tok_lib.EOS_ID]
      if len(row) > self.length:
        warn(f'input line {i + 1} has {len(row) - 1} tokens; truncated to the first '
             f'{self.length - 1} (config.task.max_target_length of {self.run.workdir})')
        row = row[:self.length]
      ids[i, :len(row)] = row
    return self._batched(self._mean, ids)

  def decode(self, z: np.ndarray) -> List[str]:
    """Greedy decodings of latents z (N, Z), detokenized (newlines become spaces)."""
    ids = self._batched(self._decode, np.asarray(z, np.float32))
    return [self.run.task.detokenize(row).replace('\n', ' ') for row in ids]


def prior_samples(decoder: VAEDecoder, n: int, seed: int = 0) -> List[str]:
  """`n` sentences decoded from z ~ N(0, I) (seeded)."""
  z_dim = decoder.run.config.model.latent_dim
  z = np.asarray(jax.random.normal(jax.random.key(seed), (n, z_dim)), np.float32)
  return decoder.decode(z)


def reconstruct(decoder: VAEDecoder, lines: Sequence[str],
                warn: Callable[[str], None] = stderr_warning) -> List[str]:
  """Each line decoded from its posterior mean; empty lines give empty outputs."""
  real = [line for line in lines if line.strip()]
  outputs = iter(decoder.decode(decoder.encode(real, warn)) if real else [])
  return [next(outputs) if line.strip() else '' for line in lines]


def interpolate(decoder: VAEDecoder, first: str, second: str, steps: int,
                warn: Callable[[str], None] = stderr_warning) -> List[str]:
  """A homotopy (Bowman et al., 2016, §5.2): `steps` latents evenly spaced from the first
  sentence's posterior mean to the second's (both ends included), decoded greedily."""
  if steps < 2:
    raise ToolError(f'--interpolate={steps}: needs >= 2 points (both ends included)')
  a, b = decoder.encode([first, second], warn)
  t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
  return decoder.decode((1 - t) * a + t * b)


def decode_file(workdir: str, input_path: str = '-', output_path: str = '-',
                options: inference.DecodeOptions = inference.DecodeOptions(),
                checkpoint: str = 'latest', *, num_samples: int = 0, interpolate_steps: int = 0,
                warn: Callable[[str], None] = stderr_warning,
                encoding_errors: str = 'strict') -> int:
  """experiments/decode.py on a VAE workdir.

  Args:
    workdir: a VAE training run.
    input_path: sentences, one per line ('-' = stdin); not read with num_samples > 0.
    output_path: one line per output ('-' = stdout).
    options: decoding options (greedy only; seed, batch_size and max_length apply).
    checkpoint: 'latest', 'best', 'averaged' or a step.
    num_samples: > 0: write this many sentences decoded from prior samples.
    interpolate_steps: > 0: the input's non-empty lines, taken in pairs, each give this many
      lines on the latent path from the first to the second.
    warn: receives warnings (truncated inputs).
    encoding_errors: 'strict' or 'replace'.

  Returns:
    Number of lines written: num_samples; pairs × interpolate_steps; or one per input line
    (reconstructions).
  """
  options.validate()
  if options.method != 'greedy':
    raise ToolError('--beam_size / --temperature do not apply to a VAE run: its outputs are '
                    'decoded greedily from latents')
  if num_samples < 0 or interpolate_steps < 0 or (num_samples and interpolate_steps):
    raise ToolError(f'--num_samples={num_samples} / --interpolate={interpolate_steps}: need '
                    'values >= 0, at most one of them > 0')
  if not num_samples and input_path != '-' and not fileio.isfile(input_path):
    raise ToolError(f'--input={input_path}: no such file (use - for stdin)')
  if output_path != '-':
    workdir_tools.check_output(output_path)
  run = inference.Run(workdir)
  params, _ = run.restore(checkpoint)
  decoder = VAEDecoder(run, params, options.max_length, options.batch_size)
  if num_samples:
    outputs = prior_samples(decoder, num_samples, options.seed)
  else:
    lines = list(workdir_tools.input_lines(input_path, encoding_errors))
    if interpolate_steps:
      pairs = [line for line in lines if line.strip()]
      if len(pairs) % 2:
        raise ToolError(f'--interpolate={interpolate_steps} reads sentences in pairs; the input '
                        f'has {len(pairs)} non-empty lines')
      outputs = [out for i in range(0, len(pairs), 2)
                 for out in interpolate(decoder, pairs[i], pairs[i + 1], interpolate_steps, warn)]
    else:
      outputs = reconstruct(decoder, lines, warn)
  return _write(output_path, outputs)


def _write(output_path: str, outputs: List[str]) -> int:
  """Writes one line per output to stdout ('-') or atomically to a file."""
  if output_path == '-':
    sys.stdout.writelines(out + '\n' for out in outputs)
    sys.stdout.flush()
    return len(outputs)
  with workdir_tools._atomic_output(output_path) as fout:  # pylint: disable=protected-access
    fout.writelines(out + '\n' for out in outputs)
  return len(outputs)
