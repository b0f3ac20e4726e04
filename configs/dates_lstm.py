r"""LSTM encoder-decoder with attention on the built-in synthetic dates task.

    python experiments/train.py --config=configs/dates_lstm.py --workdir=workdirs/dates_lstm

Same task, trainer, checkpoints and metrics as configs/default.py; only the model differs.
Arg `runlocal` shrinks everything for a smoke test.
"""

import ml_collections

from configs import default
from configs import model_sections


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` is a comma-separated list of options ('runlocal')."""
  c = default.get_config(arg)
  c.model = model_sections.lstm()
  if 'runlocal' in {o for o in (arg or '').split(',') if o}:
    c.model.emb_dim, c.model.hidden_dim = 32, 32
  return c
