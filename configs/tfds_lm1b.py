r"""Decoder-only Transformer language model on LM1B from TFDS (as the flax lm1b example).

    python experiments/train.py --config=configs/tfds_lm1b.py:tfds_data_dir=~/tensorflow_datasets --workdir=workdirs/tfds_lm1b

Needs internet on first use (TFDS downloads and prepares 'lm1b') and
`pip install -e '.[tfds]'`. Optional argument: `tfds_data_dir=DIR` (TFDS data
directory; default ~/tensorflow_datasets) and `runlocal` (smoke test on a few examples).
"""

import ml_collections

from configs import shakespeare_char
from configs import text_task


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = '[tfds_data_dir=DIR][,runlocal]'."""
  _, options, values = text_task.parse_arg(arg)
  c = shakespeare_char.get_config('runlocal' if 'runlocal' in options else '')
  task = text_task.task_config('text_lm', '')
  task.source.type = 'tfds'
  task.source.tfds_name = 'lm1b'
  task.source.tfds_data_dir = values.get('tfds_data_dir', '')
  task.source.train_split = 'train'
  task.source.eval_split = 'test'
  task.source.target_key = 'text'
  task.source.lm_mode = 'line'
  task.max_target_length = 128
  task.length_handling = 'truncate'
  task.tokenizer.type = 'sentencepiece'
  task.tokenizer.vocab_size = 32000
  task.tokenizer.max_sentences = 1_000_000
  task.batching.mode = 'pack'
  c.model.max_len = 128
  c.model.position = 'sinusoidal'
  c.task = task
  if 'runlocal' in options:
    c.task.source.max_train_examples, c.task.source.max_eval_examples = 1000, 32
    c.task.tokenizer.vocab_size = min(c.task.tokenizer.vocab_size, 1000)
  return c
