r"""LSTM encoder-decoder with attention for email subject-line generation on AESLC.

    python experiments/train.py --config=configs/aeslc_lstm.py:/path/to/data --workdir=workdirs/aeslc_lstm
    python experiments/evaluate.py --workdir=workdirs/aeslc_lstm --checkpoint=best --split=test --beam_size=4

The argument is the data directory holding `aeslc/enron_subject_line_{train,dev,test}.tar.gz`;
add `,runlocal` for a smoke test. Same task, tokenizer and ROUGE/BLEU/chrF metrics as
configs/aeslc_transformer.py (bodies cut to 128 subword tokens, subjects to 32); the
model is a Bahdanau-attention LSTM (bidirectional encoder, input feeding, 256 units).
"""

import ml_collections

from configs import aeslc_transformer
from configs import model_sections


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = 'DATA_DIR[,runlocal]'."""
  c = aeslc_transformer.get_config(arg)
  runlocal = c.model.emb_dim < 128
  c.model = model_sections.lstm(
      kind='encdec',
      emb_dim=256,
      hidden_dim=256,
      num_layers=1,
      num_decoder_layers=1,
      dropout_rate=0.2,
      bidirectional=True,
      attention='bahdanau',
      input_feeding=True,
      share_embeddings=True)
  c.optimizer.warmup_steps = 500
  if runlocal:
    c.model.emb_dim = c.model.hidden_dim = 32
    c.optimizer.warmup_steps = 5
  return c
