"""Helpers of the Hugging Face conversion tests: tiny transformers models built from a
config only (nothing downloaded), every tensor perturbed, lmjax models built from
their converted parameters, edited copies of a checkpoint directory, and the
experiments/ scripts run as from the command line."""

import os
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from tests import scripts  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmjax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmjax.hf import files  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmjax.hf import mapping  # pylint: disable=g-import-not-at-top,wrong-import-position


def perturbed(model, seed: int = 0, scale: float = 0.05):
  """`model` with N(0, scale) noise added to every tensor (norm scales leave 1, biases and
  relative position tables leave 0), so a converter that skips any tensor cannot pass."""
  torch.manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * scale)
  return model.eval()


def save(model, directory: str) -> str:
  model.save_pretrained(directory, safe_serialization=True)
  return directory


def run_experiment(script: str, *args: str) -> str:
  """Runs experiments/`script` with `args` (cheaply: `tests.scripts.run`); asserts that it
  exits 0 and returns its stdout."""
  proc = scripts.run([sys.executable, os.path.join(scripts.REPO, 'experiments', script), *args],
                     text=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def edited_copy(hf_dir: str, directory: str, edit) -> str:
  """Copies every file of `hf_dir` to `directory`, with `edit(tensors)` applied to the
  {name: array} of its model.safetensors (in place: add, pop, rename)."""
  os.makedirs(directory)
  for name in os.listdir(hf_dir):
    with open(os.path.join(hf_dir, name), 'rb') as src, open(os.path.join(directory, name),
                                                             'wb') as dst:
      dst.write(src.read())
  tensors = load_file(os.path.join(directory, 'model.safetensors'))
  edit(tensors)
  save_file(tensors, os.path.join(directory, 'model.safetensors'), metadata={'format': 'pt'})
  return directory


def expected_shapes(model_config, sizes, batch):
  """{lmjax path: shape} of the parameters of `build_model(model_config, **sizes)`."""
  module = models.build_model(model_config, **sizes)
  shapes = jax.eval_shape(lambda: module.init({'params': jax.random.key(0)}, batch, train=False))
  flat = flax.traverse_util.flatten_dict(flax.core.meta.unbox(shapes)['params'], sep='/')
  return module, {k: v.shape for k, v in flat.items()}


def nested(flat):
  return flax.traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()}, sep='/')


def flat_numpy(params):
  return {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(params, sep='/').items()}


def source_batch(vocab: int, lengths, width: int, seed: int = 0) -> np.ndarray:
  """(B, width) int32 ids in [3, vocab), row b real for lengths[b] tokens then padding 0."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, vocab, size=(len(lengths), width)).astype(np.int32)
  for b, n in enumerate(lengths):
    ids[b, n:] = 0
  return ids


def hf_dir_roundtrip(table: mapping.Table, params, hf_config, directory: str) -> str:
  """Writes lmjax params as an HF directory (what export_hf.py writes)."""
  files.write_tensors(mapping.to_hf(table, flat_numpy(params)), directory)
  files.write_config(hf_config, directory)
  return directory


def assert_logits_close(ours, theirs, atol=1e-4):
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  assert ours.shape == theirs.shape
  diff = float(np.max(np.abs(ours - theirs)))
  assert diff <= atol, f'max |logit difference| {diff:.3g} > {atol}'
  return diff



def seq2seq_logits(model, inputs, targets):
  """A transformers encoder-decoder's logits (B, T, V) for sources `inputs` (B, S; 0 =
  padding) and teacher-forced `targets` (B, T), decoder inputs shifted right from 0."""
  decoder_inputs = np.pad(targets, ((0, 0), (1, 0)))[:, :-1]
  with torch.no_grad():
    out = model(input_ids=torch.tensor(inputs, dtype=torch.long),
                attention_mask=torch.tensor(inputs > 0, dtype=torch.long),
                decoder_input_ids=torch.tensor(decoder_inputs, dtype=torch.long))
  return out.logits.numpy()
