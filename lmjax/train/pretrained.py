"""Copies pretrained word vectors into a fresh run's input embedding rows."""

from typing import Any, Tuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.config import configlib
from lmjax.data import tokenizers as tok_lib
from lmjax.data import word_vectors

# Top-level modules holding token embeddings ('embedding' params of shape (V, E)) in every
# model family (see lmjax/models); a shared table appears once.
EMBEDDING_MODULES = ('embed', 'source_embed', 'target_embed')


def _replace_rows(leaf: jax.Array, table: np.ndarray, found: np.ndarray) -> jax.Array:
  """leaf with the rows where `found` replaced by `table`'s, in the leaf's sharding."""
  fn = jax.jit(lambda x, t, f: jnp.where(f[:, None], t.astype(x.dtype), x),
               out_shardings=leaf.sharding)
  return fn(leaf, table, found)


def load_word_vectors(state, task, task_config) -> Tuple[Any, int]:
  """Sets the embedding rows of vocabulary words found in config.task.tokenizer.vectors.

  Rows of words the file lacks (and of the specials <pad>, </s>, <unk>) keep their random
  initialisation; the moving average (ema_params), when kept, gets the same rows.

  Args:
    state: a freshly initialised TrainState.
    task: the built task (its word tokenizer gives the vocabulary).
    task_config: config.task.

  Returns:
    (state, number of vocabulary words given a pretrained row).

  Raises:
    configlib.ConfigError: no word tokenizer, no token embedding of the vocabulary's size,
      or vectors whose width differs from the embedding's (config.model.emb_dim).
    sources.DataError: unreadable vectors file, or none of its words in the vocabulary.
  """
  tokenizer = task.tokenizers.get('inputs', task.tokenizers.get('targets'))
  if not isinstance(tokenizer, tok_lib.VocabTokenizer) or tokenizer.level != 'word':
    raise configlib.ConfigError(
        "config.task.tokenizer.vectors needs config.task.tokenizer.type='word'")
  path = word_vectors.resolve(task_config.tokenizer.vectors, task_config.get('data_dir', ''))
  table, found = word_vectors.embedding_rows(tokenizer.tokens, path,
                                             task_config.tokenizer.get('lowercase', False))
  found[:len(tok_lib.SPECIALS)] = False
  names = [n for n in EMBEDDING_MODULES if n in state.params and 'embedding' in state.params[n]
           and state.params[n]['embedding'].shape[0] == tokenizer.vocab_size]
  if not names:
    raise configlib.ConfigError(
        'config.task.tokenizer.vectors: the model has no token embedding of the '
        f'vocabulary size {tokenizer.vocab_size} (modules {EMBEDDING_MODULES})')
  params, ema = dict(state.params), state.ema_params and dict(state.ema_params)
  for name in names:
    width = params[name]['embedding'].shape[1]
    if width != table.shape[1]:
      raise configlib.ConfigError(
          f'config.task.tokenizer.vectors={path} has {table.shape[1]}-dimensional vectors '
          f'but the embedding {name!r} is {width} wide: set config.model.emb_dim={table.shape[1]}')
    params[name] = {**params[name],
                    'embedding': _replace_rows(params[name]['embedding'], table, found)}
    if ema is not None:
      ema[name] = {**ema[name], 'embedding': _replace_rows(ema[name]['embedding'], table, found)}
  count = int(found.sum())
  logging.info('Word vectors %s: %d of %d vocabulary words (%.1f %%) in %s', path, count,
               tokenizer.vocab_size, 100.0 * count / tokenizer.vocab_size, ', '.join(names))
  return state.replace(params=params, ema_params=ema), count
