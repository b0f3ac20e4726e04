r"""LSTM sentence VAE on the dates task's source sentences: no corpus needed.

    python experiments/train.py --config=configs/dates_vae.py --workdir=workdirs/dates_vae
    python experiments/decode.py --workdir=workdirs/dates_vae --num_samples=5 < /dev/null
    printf 'third of may 1990\ntwenty first of june 2004\n' | \
        python experiments/decode.py --workdir=workdirs/dates_vae --interpolate=5

Each example is one date sentence (`twenty third of march nineteen ninety four </s>`).
Arg `runlocal` shrinks everything for a smoke test.
"""

import ml_collections

from configs import default
from configs import vae_section


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` is a comma-separated list of options ('runlocal')."""
  options = {o for o in (arg or '').split(',') if o}
  c = default.get_config()
  # Registered task name (lmjax.data.synthetic_tasks); one sentence per example.
  c.task.name = 'synthetic_dates_lm'
  # Which strings to model: 'source' (dates in words/numerals) or 'target' (ISO dates).
  c.task.lm_text = 'source'
  # Longest sentence (≤ 11 tokens needed, EOS included).
  c.task.max_target_length = 16
  c.model = vae_section.lstm_vae(emb_dim=64, hidden_dim=128, latent_dim=16,
                                 kl_schedule='cyclical', kl_cycle_steps=1_000, free_bits=0.05)
  vae_section.set_eval(c, iw_samples=50)
  # Total optimizer steps.
  c.train.num_train_steps = 3_000
  c.train.batch_size = 64
  # LSTMs like larger gradients clipped at 5.
  c.optimizer.grad_clip_norm = 5.0
  c.eval.batch_size = 64
  c.eval.num_samples = 0
  if 'runlocal' in options:
    c.task.num_train, c.task.num_eval = 500, 32
    c.optimizer.warmup_steps = 5
    c.train.num_train_steps, c.train.log_every = 20, 5
    c.train.eval_every = c.train.checkpoint_every = 10
    c.model.emb_dim = c.model.hidden_dim = 32
    c.model.latent_dim = 8
    c.model.kl_cycle_steps = 10
    c.eval.iw_samples = 4
    c.train.batch_size, c.eval.batch_size = 16, 16
  return c
