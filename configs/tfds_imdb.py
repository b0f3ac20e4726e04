r"""BiLSTM sentiment classifier on IMDB reviews from TFDS.

    python experiments/train.py --config=configs/tfds_imdb.py:tfds_data_dir=~/tensorflow_datasets --workdir=workdirs/tfds_imdb

Needs internet on first use (TFDS downloads and prepares 'imdb_reviews') and
`pip install -e '.[tfds]'`. Optional argument: `tfds_data_dir=DIR` (TFDS data
directory; default ~/tensorflow_datasets) and `runlocal` (smoke test on a few examples).
"""

import ml_collections

from configs import sst2_bilstm
from configs import text_task


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = '[tfds_data_dir=DIR][,runlocal]'."""
  _, options, values = text_task.parse_arg(arg)
  c = sst2_bilstm.get_config('runlocal' if 'runlocal' in options else '')
  task = text_task.task_config('text_classify', '')
  task.source.type = 'tfds'
  task.source.tfds_name = 'imdb_reviews'
  task.source.tfds_data_dir = values.get('tfds_data_dir', '')
  task.source.train_split = 'train'
  task.source.eval_split = 'test'
  task.source.input_key, task.source.label_key = 'text', 'label'
  task.source.labels = ['0', '1']
  task.source.label_names = ['negative', 'positive']
  task.max_input_length = 256
  task.tokenizer.type = 'sentencepiece'
  task.tokenizer.vocab_size = 16000
  task.tokenizer.max_sentences = 100_000
  task.batching.mode = 'plain'
  c.task = task
  c.model.char_dim = 0  # subword pieces, not words: no per-word character CNN
  if 'runlocal' in options:
    c.task.source.max_train_examples, c.task.source.max_eval_examples = 1000, 32
    c.task.tokenizer.vocab_size = min(c.task.tokenizer.vocab_size, 1000)
  return c
