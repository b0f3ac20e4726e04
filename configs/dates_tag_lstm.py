r"""BiLSTM-CRF tagger on the dates task: BIO tags of the day, month and year fields.

    python experiments/train.py --config=configs/dates_tag_lstm.py --workdir=workdirs/dates_tag_lstm

`twenty third of march nineteen ninety four` → `B-DAY I-DAY O B-MONTH B-YEAR I-YEAR I-YEAR`
(Huang et al., 2015; Lample et al., 2016). The loss is the CRF's mean negative
log-likelihood per sentence; eval tags come from Viterbi decoding and are scored by
token accuracy and entity-level F1 (seqeval). Arg `runlocal` shrinks everything.
"""

import ml_collections

from configs import default
from configs import model_sections


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` is a comma-separated list of options ('runlocal')."""
  options = {o for o in (arg or '').split(',') if o}
  c = default.get_config()
  # Registered task name (lmjax.data.synthetic_tasks).
  c.task.name = 'synthetic_dates_tag'

  c.model = model_sections.lstm(
      kind='encoder',
      emb_dim=64,
      hidden_dim=128,
      attention='none',
      input_feeding=False,
      use_crf=True,
      head='tag')

  # Total optimizer steps.
  c.train.num_train_steps = 1_000
  # The CRF loss is a sentence NLL: no label smoothing.
  c.train.label_smoothing = 0.0
  # Steps between evaluations and checkpoints.
  c.train.eval_every = c.train.checkpoint_every = 250
  # Highest eval entity F1 (%) selects the best checkpoint.
  c.train.best_metric = 'entity_f1'
  c.train.best_mode = 'max'
  # Tagged sentences printed at the end.
  c.eval.num_samples = 5
  if 'runlocal' in options:
    c.task.num_train, c.task.num_eval = 2_000, 100
    c.optimizer.warmup_steps = 5
    c.train.num_train_steps, c.train.log_every = 20, 5
    c.train.eval_every = c.train.checkpoint_every = 10
    c.model.emb_dim = c.model.hidden_dim = 32
    c.train.batch_size, c.eval.batch_size = 16, 64
  return c
