r"""Transformer-encoder tagger on the dates task: BIO tags of the day, month and year fields.

    python experiments/train.py --config=configs/dates_tag_transformer.py --workdir=workdirs/dates_tag_tf

Same task and metrics (token accuracy, entity F1) as configs/dates_tag_lstm.py, with a
softmax per token instead of a CRF (set --config.model.use_crf=True to add one).
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
  c.task.name = 'synthetic_dates_tag'

  c.model = model_sections.transformer_encoder(head='tag')

  # Total optimizer steps.
  c.train.num_train_steps = 1_000
  # Steps between evaluations and checkpoints.
  c.train.eval_every = c.train.checkpoint_every = 250
  # Highest eval entity F1 (%) selects the best checkpoint.
  c.train.best_metric = 'entity_f1'
  c.train.best_mode = 'max'
  if 'runlocal' in options:
    c.task.num_train, c.task.num_eval = 2_000, 100
    c.optimizer.warmup_steps = 5
    c.train.num_train_steps, c.train.log_every = 20, 5
    c.train.eval_every = c.train.checkpoint_every = 10
    c.model.emb_dim = c.model.qkv_dim = 32
    c.model.mlp_dim = 64
    c.model.num_encoder_layers = 1
    c.train.batch_size, c.eval.batch_size = 16, 64
  return c
