r"""Transformer summarizer on CNN/DailyMail from TFDS (article → highlights, ROUGE).

    python experiments/train.py --config=configs/tfds_cnn_dailymail.py:tfds_data_dir=~/tensorflow_datasets --workdir=workdirs/tfds_cnn_dailymail

Needs internet on first use (TFDS downloads and prepares 'cnn_dailymail') and
`pip install -e '.[tfds]'`. Optional argument: `tfds_data_dir=DIR` (TFDS data
directory; default ~/tensorflow_datasets) and `runlocal` (smoke test on a few examples).
"""

import ml_collections

from configs import aeslc_transformer
from configs import text_task


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = '[tfds_data_dir=DIR][,runlocal]'."""
  _, options, values = text_task.parse_arg(arg)
  c = aeslc_transformer.get_config('runlocal' if 'runlocal' in options else '')
  task = text_task.task_config('text_seq2seq', '')
  task.source.type = 'tfds'
  task.source.tfds_name = 'cnn_dailymail'
  task.source.tfds_data_dir = values.get('tfds_data_dir', '')
  task.source.train_split = 'train'
  task.source.eval_split = 'validation'
  task.source.input_key, task.source.target_key = 'article', 'highlights'
  task.max_input_length = 512
  task.max_target_length = 128
  task.length_handling = 'truncate'
  task.decode_metrics = 'rouge'
  task.tokenizer.type = 'sentencepiece'
  task.tokenizer.vocab_size = 32000
  task.tokenizer.max_sentences = 200_000
  task.batching.mode = 'bucket'
  task.batching.bucket_lengths = [128, 256, 512]
  task.batching.max_tokens = 16384
  c.model.max_len = 512
  c.eval.decode_max_length = 128
  c.task = task
  if 'runlocal' in options:
    c.task.source.max_train_examples, c.task.source.max_eval_examples = 1000, 32
    c.task.tokenizer.vocab_size = min(c.task.tokenizer.vocab_size, 1000)
  return c
