r"""BiLSTM classifier on the dates task: which month is the date in (12 classes)?

    python experiments/train.py --config=configs/dates_classify_lstm.py --workdir=workdirs/dates_classify_lstm

The month is a word, an abbreviation or two digits depending on the source format
(`0 3 / 2 3 / 1 9 9 4` → march), so the model must read the sentence.
Eval: accuracy and macro-F1. Arg `runlocal` shrinks everything for a smoke test.
"""

import ml_collections

from configs import default
from configs import model_sections


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` is a comma-separated list of options ('runlocal')."""
  options = {o for o in (arg or '').split(',') if o}
  c = default.get_config()
  # Registered task name (lmjax.data.synthetic_tasks).
  c.task.name = 'synthetic_dates_classify'

  c.model = model_sections.lstm(
      kind='encoder',
      emb_dim=64,
      hidden_dim=128,
      attention='none',
      input_feeding=False,
      pooling='attention',
      head='classify')

  # Total optimizer steps.
  c.train.num_train_steps = 1_000
  # Steps between evaluations and checkpoints.
  c.train.eval_every = c.train.checkpoint_every = 250
  # Highest eval macro-F1 (%) selects the best checkpoint.
  c.train.best_metric = 'macro_f1'
  c.train.best_mode = 'max'
  # Predictions printed at the end.
  c.eval.num_samples = 5
  if 'runlocal' in options:
    c.task.num_train, c.task.num_eval = 2_000, 100
    c.optimizer.warmup_steps = 5
    c.train.num_train_steps, c.train.log_every = 20, 5
    c.train.eval_every = c.train.checkpoint_every = 10
    c.model.emb_dim = c.model.hidden_dim = 32
    c.train.batch_size, c.eval.batch_size = 16, 64
  return c
