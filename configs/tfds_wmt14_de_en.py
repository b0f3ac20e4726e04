r"""Transformer on WMT14 De→En from TFDS (as the flax wmt example; newstest2013 eval).

    python experiments/train.py --config=configs/tfds_wmt14_de_en.py:tfds_data_dir=~/tensorflow_datasets --workdir=workdirs/tfds_wmt14_de_en

Needs internet on first use (TFDS downloads and prepares 'wmt14_translate/de-en') and
`pip install -e '.[tfds]'`. Optional argument: `tfds_data_dir=DIR` (TFDS data
directory; default ~/tensorflow_datasets) and `runlocal` (smoke test on a few examples).
"""

import ml_collections

from configs import multi30k_transformer
from configs import text_task


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = '[tfds_data_dir=DIR][,runlocal]'."""
  _, options, values = text_task.parse_arg(arg)
  c = multi30k_transformer.get_config('runlocal' if 'runlocal' in options else '')
  task = text_task.task_config('text_seq2seq', '')
  task.source.type = 'tfds'
  task.source.tfds_name = 'wmt14_translate/de-en'
  task.source.tfds_data_dir = values.get('tfds_data_dir', '')
  task.source.train_split = 'train'
  task.source.eval_split = 'validation'
  task.source.input_key, task.source.target_key = 'de', 'en'
  task.max_input_length = task.max_target_length = 128
  task.length_handling = 'filter'
  task.tokenizer.type = 'sentencepiece'
  task.tokenizer.vocab_size = 32000
  task.tokenizer.max_sentences = 1_000_000
  task.batching.mode = 'pack'
  c.model.max_len = 128
  c.eval.decode_max_length = 128
  c.train.best_metric = 'bleu'
  c.task = task
  if 'runlocal' in options:
    c.task.source.max_train_examples, c.task.source.max_eval_examples = 1000, 32
    c.task.tokenizer.vocab_size = min(c.task.tokenizer.vocab_size, 1000)
  return c
