r"""Word-level LSTM language model on Penn Treebank (Mikolov's 10k-word version).

    python experiments/train.py --config=configs/ptb_lstm.py:/path/to/data --workdir=workdirs/ptb

The argument is the data directory holding `ptb/ptb.{train,valid}.txt`; add `,runlocal`
for a smoke test. The corpus is one token stream (EOS between sentences) cut into
35-token rows, each starting from a zero state (no state carried across batches, so
perplexity is a little above the Zaremba et al. 2014 numbers at equal size).
Model ≈ the TF tutorial "small" (2×200) with dropout.
"""

import ml_collections

from configs import default
from configs import model_sections
from configs import text_task


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = 'DATA_DIR[,runlocal]'."""
  data_dir, options, _ = text_task.parse_arg(arg)
  c = default.get_config()
  c.task = text_task.task_config('text_lm', data_dir)
  c.task.source.type = 'monolingual'
  c.task.source.train_files = ['ptb/ptb.train.txt']
  c.task.source.eval_files = ['ptb/ptb.valid.txt']
  c.task.source.lm_mode = 'stream'
  c.task.max_target_length = 35
  # The files already map rare words to <unk> (10k types): keep every word.
  c.task.tokenizer.type = 'word'
  c.task.tokenizer.vocab_size = 0
  c.task.tokenizer.min_count = 1
  c.task.batching.mode = 'plain'

  c.model = model_sections.lstm(
      kind='decoder',
      emb_dim=200,
      hidden_dim=200,
      num_layers=2,
      dropout_rate=0.2,
      bidirectional=False,
      attention='none',
      input_feeding=False,
      tie_output=True)
  c.optimizer.learning_rate = 3e-3
  c.optimizer.warmup_steps = 100
  c.optimizer.weight_decay = 0.0
  c.optimizer.grad_clip_norm = 5.0
  c.train.batch_size = 32
  c.train.num_train_steps = 10_000
  c.train.label_smoothing = 0.0
  c.train.eval_every = c.train.checkpoint_every = 1000
  c.train.best_metric = 'perplexity'
  c.train.best_mode = 'min'
  c.eval.batch_size = 256
  if 'runlocal' in options:
    c.task.source.max_train_examples = 0
    c.model.emb_dim = c.model.hidden_dim = 32
    c.optimizer.warmup_steps = 5
    c.train.num_train_steps, c.train.log_every = 20, 5
    c.train.eval_every = c.train.checkpoint_every = 10
    c.train.batch_size, c.eval.batch_size = 16, 64
  return c
