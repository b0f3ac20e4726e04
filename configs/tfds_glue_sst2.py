r"""BiLSTM classifier on GLUE SST-2 from TFDS (phrase-level train, sentence dev).

    python experiments/train.py --config=configs/tfds_glue_sst2.py:tfds_data_dir=~/tensorflow_datasets --workdir=workdirs/tfds_glue_sst2

Needs internet on first use (TFDS downloads and prepares 'glue/sst2') and
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
  task.source.tfds_name = 'glue/sst2'
  task.source.tfds_data_dir = values.get('tfds_data_dir', '')
  task.source.train_split = 'train'
  task.source.eval_split = 'validation'
  task.source.input_key, task.source.label_key = 'sentence', 'label'
  task.source.labels = ['0', '1']
  task.source.label_names = ['negative', 'positive']
  task.max_input_length = 64
  task.tokenizer.type = 'word'
  task.tokenizer.vocab_size = 0
  task.tokenizer.min_count = 1
  task.tokenizer.lowercase = True
  task.batching.mode = 'plain'
  task.word_chars = 20  # the character CNN of sst2_bilstm reads each word's bytes
  c.task = task
  if 'runlocal' in options:
    c.task.source.max_train_examples, c.task.source.max_eval_examples = 1000, 32
    c.task.tokenizer.vocab_size = min(c.task.tokenizer.vocab_size, 1000)
  return c
