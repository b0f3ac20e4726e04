r"""LSTM language model with stateful truncated BPTT on the dates task's source sentences.

    python experiments/train.py --config=configs/dates_lm_lstm.py --workdir=workdirs/dates_lm_lstm

The training sentences (each ending with EOS) form one token stream, cut into
`train.batch_size` contiguous rows; each step reads the next 20-token window of every
row and starts from the LSTM state the previous step ended with (Zaremba et al., 2014).
Eval perplexity is computed the same way over the held-out dates' sentences.
Arg `runlocal` shrinks everything for a smoke test.
"""

import ml_collections

from configs import default
from configs import model_sections


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` is a comma-separated list of options ('runlocal')."""
  options = {o for o in (arg or '').split(',') if o}
  c = default.get_config()
  # Registered task name (lmjax.data.synthetic_tasks).
  c.task.name = 'synthetic_dates_lm'
  # Which strings to model: 'source' (dates in words/numerals) or 'target' (ISO dates).
  c.task.lm_text = 'source'
  # BPTT window T (tokens per row per step); also the per-sentence cut-off (≤ 11 needed).
  c.task.max_target_length = 20

  c.model = model_sections.lstm(
      kind='decoder',
      hidden_dim=128,
      num_layers=2,
      bidirectional=False,
      attention='none',
      input_feeding=False,
      tie_output=True)

  # Carry the LSTM state across batches (truncated BPTT over the token stream).
  c.train.stateful = True
  # Rows of the stream (each step reads batch_size × max_target_length tokens).
  c.train.batch_size = 32
  # Total optimizer steps.
  c.train.num_train_steps = 3_000
  # No label smoothing: perplexity is the metric.
  c.train.label_smoothing = 0.0
  # Lowest eval perplexity selects the best checkpoint.
  c.train.best_metric = 'perplexity'
  c.train.best_mode = 'min'
  # LSTMs like larger gradients clipped at 5 (Zaremba et al.).
  c.optimizer.grad_clip_norm = 5.0
  # Eval stream rows.
  c.eval.batch_size = 64
  if 'runlocal' in options:
    c.task.num_train, c.task.num_eval = 2_000, 100
    c.optimizer.warmup_steps = 5
    c.train.num_train_steps, c.train.log_every = 20, 5
    c.train.eval_every = c.train.checkpoint_every = 10
    c.model.emb_dim = c.model.hidden_dim = 32
    c.model.num_layers = 1
    c.train.batch_size, c.eval.batch_size = 16, 16
  return c
