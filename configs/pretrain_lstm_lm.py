r"""LSTM language-model pretraining on local English text, the source of Dai & Le (2015)'s
LM-initialised classifier (configs/sst2_lm_finetune.py).

    python experiments/train.py --config=configs/pretrain_lstm_lm.py:/path/to/data --workdir=workdirs/lstm_lm

The argument is the data directory holding `ptb/ptb.train.txt` (the Penn Treebank's
training split only: the last 2 % of its text is held out for eval, no validation or test
file is read); add `,runlocal` for a smoke test, `,text=sst2` to pretrain on the text of
SST-2's training split instead (its labels unused; `text_task.use_pretraining_text`).
The text is one stream (an EOS after each line) cut into 64-token rows, tokenized with a lowercased SentencePiece vocabulary of
8,000 pieces that a fine-tune copies. A one-layer unidirectional LSTM (width 256), whose
embedding and layers a classifier of the same width loads.
"""

import ml_collections

from configs import default
from configs import model_sections
from configs import text_task


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = 'DATA_DIR[,text=general|sst2][,runlocal]'."""
  data_dir, options, values = text_task.parse_arg(arg)
  c = default.get_config()
  c.task = text_task.task_config('text_lm', data_dir)
  c.task.source.type = 'monolingual'
  c.task.source.train_files = ['ptb/ptb.train.txt']
  text_task.use_pretraining_text(c, values, 'pretrain_lstm_lm.py')
  c.task.source.eval_files = []  # the last eval_fraction of the training text
  c.task.source.eval_fraction = 0.02
  c.task.source.lm_mode = 'stream'
  c.task.max_target_length = 64
  c.task.tokenizer.type = 'sentencepiece'
  c.task.tokenizer.vocab_size = 8000
  c.task.tokenizer.lowercase = True
  c.task.tokenizer.shared = True
  c.task.batching.mode = 'plain'

  c.model = model_sections.lstm(
      kind='decoder', emb_dim=256, hidden_dim=256, num_layers=1, dropout_rate=0.2,
      bidirectional=False, attention='none', input_feeding=False, tie_output=False)
  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_steps = 200
  c.optimizer.schedule = 'cosine'
  c.train.batch_size = 32
  c.train.num_train_steps = 10000
  c.train.eval_every = 1000
  c.train.checkpoint_every = 500
  c.train.best_metric = 'perplexity'
  c.train.best_mode = 'min'
  c.eval.batch_size = 64
  if 'runlocal' in options:
    c.task.source.max_train_examples = 0
    c.task.source.eval_fraction = 0.01
    c.task.tokenizer.vocab_size = 1000
    c.model.emb_dim = c.model.hidden_dim = 32
    c.optimizer.warmup_steps = 5
    c.train.num_train_steps, c.train.log_every = 40, 10
    c.train.eval_every = c.train.checkpoint_every = 20
    c.train.batch_size, c.eval.batch_size = 16, 64
  return c
