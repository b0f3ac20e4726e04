"""A Hugging Face checkpoint directory → an lmjax workdir, and a workdir → a Hugging Face
directory (experiments/import_hf.py, experiments/export_hf.py).

An imported workdir is what a training run leaves: config.json (the given experiment
config with the checkpoint's `config.model`, and `config.task.tokenizer` describing the
bridged tokenizer), tokenizers/vocab.json (bridged from the checkpoint's tokenizer file,
which its family names: T5's SentencePiece `spiece.model`, GPT-2's `tokenizer.json`) and
checkpoints/last/0 (its parameters), so evaluate.py and decode.py read it, and
`train.py --config=configs/finetune.py:W` (or any config with the same model and
`--config.train.init_from=W`) fine-tunes from it. Export writes the tokenizer file back.
Everything is checked before anything is written; the workdir appears whole or not at all.
"""

import json
from typing import Any, Dict

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmjax import fileio
from lmjax import models
from lmjax.data import text_common
from lmjax.data import tokenizers as tok_lib
from lmjax.hf import families
from lmjax.hf import files
from lmjax.hf import mapping
from lmjax.hf.files import HFError
from lmjax.tools import averaging
from lmjax.train import loop

SPIECE = 'spiece.model'  # T5's (t5.TOKENIZER_FILE)
PARAM_DTYPES = ('float32', 'keep')


def bridged_tokenizer(hf_dir: str, family, hf_config: Dict[str, Any]):
  """The checkpoint's tokenizer file (the family's `TOKENIZER_FILE`) as an lmjax tokenizer
  (pad 0, EOS 1, unk 2).

  Args:
    hf_dir: the checkpoint directory.
    family: its family module (`families.by_model_type`).
    hf_config: its config.json.

  Returns:
    The tokenizer.

  Raises:
    HFError: no tokenizer file, or one the family cannot bridge (one line naming it).
  """
  path = fileio.join(hf_dir, family.TOKENIZER_FILE)
  if not fileio.exists(path):
    raise HFError(f'{hf_dir}: no {family.TOKENIZER_FILE} ({family.TOKENIZER_HINT}); nothing '
                  'was written')
  try:
    return family.tokenizer(fileio.read_bytes(path), hf_config)
  except (ValueError, RuntimeError, ImportError) as e:
    raise HFError(f'{path}: {e}') from e


def _task_tokenizer(config, family, tokenizer) -> Dict[str, Any]:
  """Sets config.task.tokenizer to describe the bridged tokenizer; returns its options."""
  task = config.task
  if 'tokenizer' not in task:
    raise HFError('--config: its task must read text with a tokenizer (config.task.tokenizer), '
                  'e.g. configs/multi30k_transformer.py:DATA or configs/shakespeare_char.py:DATA')
  task.tokenizer.type = family.TOKENIZER_TYPE
  task.tokenizer.shared = True  # one vocabulary file: tokenizers/vocab.json
  task.tokenizer.vocab_size = tokenizer.vocab_size
  return text_common.tokenizer_options(task)


def _abstract_params(model_config, vocab: int) -> Dict[str, tuple]:
  """{path: shape} of the parameters of `model_config` for a vocabulary of `vocab` tokens."""
  module = models.build_model(model_config, vocab_size=vocab, target_vocab_size=vocab)
  batch = {'inputs': jnp.ones((1, 8), jnp.int32), 'targets': jnp.ones((1, 8), jnp.int32)}
  shapes = jax.eval_shape(lambda: module.init({'params': jax.random.key(0)}, batch, train=False))
  flat = flax.traverse_util.flatten_dict(flax.core.meta.unbox(shapes)['params'], sep='/')
  return {k: tuple(v.shape) for k, v in flat.items()}


def import_checkpoint(hf_dir: str, workdir: str, config: ml_collections.ConfigDict,
                      param_dtype: str = 'float32') -> Dict[str, Any]:
  """Writes an lmjax workdir holding a Hugging Face checkpoint.

  Args:
    hf_dir: a directory with config.json, model.safetensors (or shards and their index)
      and the family's tokenizer file (T5: spiece.model; GPT-2: tokenizer.json).
    workdir: the new run directory (must not exist, or be empty).
    config: the experiment config to fine-tune and evaluate with (task, optimizer, ...);
      its `config.model` is replaced by the checkpoint's.
    param_dtype: 'float32' casts the tensors (lmjax keeps parameters in float32);
      'keep' stores them as the checkpoint has them (e.g. bfloat16).

  Returns:
    A report: family, number of tensors, parameter count, vocabulary sizes.

  Raises:
    HFError: one line per problem (unmatched tensors, missing parameters, shapes, an
      unsupported model type, a workdir that is not empty); nothing is written then.
  """
  if param_dtype not in PARAM_DTYPES:
    raise HFError(f'--param_dtype={param_dtype!r}: expected one of {PARAM_DTYPES}')
  if fileio.exists(workdir) and fileio.listdir(workdir):
    raise HFError(f'--workdir {workdir} is not empty; nothing was written (import into a new '
                  'directory)')
  hf_config = files.read_config(hf_dir)
  family = families.by_model_type(hf_config, fileio.join(hf_dir, files.CONFIG))
  tensors = files.read_tensors(hf_dir, 'float32' if param_dtype == 'float32' else None)
  fields = family.model_config(hf_config, tensors)
  vocab = fields.pop('vocab_size')
  tokenizer = bridged_tokenizer(hf_dir, family, hf_config)
  if tokenizer.vocab_size > vocab:
    raise HFError(f'{hf_dir}: {family.TOKENIZER_FILE} gives {tokenizer.vocab_size} lmjax ids, '
                  f'more than the {vocab} embedding rows of the checkpoint')
  config = ml_collections.ConfigDict(config.to_dict())
  options = _task_tokenizer(config, family, tokenizer)
  kept = {k: config.model[k] for k in ('dtype', 'attention_impl', 'scan_layers',
                                        'remat_policy', 'matmul_dtype') if k in config.model}
  kept['scan_layers'] = False  # the table names unrolled layers
  config.model = ml_collections.ConfigDict(
      dict(fields, **kept, **{models.PADDED_VOCAB: vocab}))
  table = family.table(fields)
  flat = mapping.to_lmjax(table, tensors, _abstract_params(config.model, tokenizer.vocab_size),
                          hf_dir)
  params = flax.traverse_util.unflatten_dict(flat, sep='/')

  staging = workdir.rstrip('/') + '.import-tmp'
  fileio.rmtree(staging)
  fileio.makedirs(staging)
  loop.save_config(config, staging, 0)
  fileio.makedirs(fileio.join(staging, 'tokenizers'))
  tokenizer.save(fileio.join(staging, 'tokenizers', 'vocab.json'), options)
  meta = {'imported_from': fileio.resolve(hf_dir), 'hf_model_type': hf_config['model_type']}
  averaging.write_checkpoint(staging, 'last', 0, {'step': np.int32(0), 'params': params}, meta)
  if fileio.exists(workdir):
    fileio.rmtree(workdir)  # empty (checked above)
  fileio.move(staging, workdir)
  return {'family': hf_config['model_type'], 'tensors': len(tensors),
          'parameters': int(sum(np.size(v) for v in flat.values())),
          'vocab_rows': vocab, 'tokenizer_pieces': tokenizer.vocab_size}


def export_checkpoint(workdir: str, out_dir: str, checkpoint: str = 'latest') -> Dict[str, Any]:
  """Writes a workdir's parameters as a Hugging Face directory that `from_pretrained` loads,
  with the family's tokenizer file when the workdir's tokenizer is the family's bridge
  (spiece.model, tokenizer.json).

  Args:
    workdir: an lmjax run directory whose model a supported family can hold.
    out_dir: the new directory (must not exist, or be empty).
    checkpoint: 'latest', 'best', 'averaged' or a step (as evaluate.py's --checkpoint).

  Returns:
    A report: family, step, number of tensors.

  Raises:
    HFError: a model no family holds, an unreadable tokenizer file, or a non-empty output
      directory; nothing is written then.
  """
  from lmjax.tools import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  if fileio.exists(out_dir) and fileio.listdir(out_dir):
    raise HFError(f'--output {out_dir} is not empty; nothing was written')
  config = workdir_lib.load_config(workdir)
  model = dict(config.model)
  family = families.by_model_config(model)
  slot, step = workdir_lib.resolve_checkpoint(workdir, checkpoint)
  state, _ = averaging.read_checkpoint(workdir, slot, step)
  flat = flax.traverse_util.flatten_dict(averaging.model_params(state), sep='/')
  if family.EMBEDDING not in flat:
    raise HFError(f'{workdir}: its checkpoint has no {family.EMBEDDING} parameter (the '
                  'word embedding this family exports)')
  vocab = flat[family.EMBEDDING].shape[0]
  fields = dict(model, vocab_size=vocab)
  tensors = mapping.to_hf(family.table(fields), flat)
  tokenizer_data = None
  tokenizer_path = fileio.join(workdir, 'tokenizers', 'vocab.json')
  if fileio.exists(tokenizer_path):
    try:
      tokenizer_data = family.tokenizer_file(tok_lib.load(tokenizer_path))
    except ValueError as e:
      raise HFError(str(e)) from e
  files.write_tensors(tensors, out_dir)
  files.write_config(family.hf_config(fields), out_dir)
  if tokenizer_data is not None:
    fileio.write_bytes(fileio.join(out_dir, family.TOKENIZER_FILE), tokenizer_data)
  return {'family': model.get('family'), 'slot': slot, 'step': step, 'tensors': len(tensors)}


def report_line(report: Dict[str, Any]) -> str:
  return json.dumps(report, sort_keys=True)

