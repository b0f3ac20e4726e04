r"""LSTM encoder-decoder with attention on the built-in synthetic dates task.

    python experiments/train.py --config=configs/dates_lstm.py --workdir=workdirs/dates_lstm

Same task, trainer, checkpoints and metrics as configs/default.py; only the model differs.
Arg `runlocal` shrinks everything for a smoke test.
"""

import ml_collections

from configs import default


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` is a comma-separated list of options ('runlocal')."""
  c = default.get_config(arg)
  c.model = ml_collections.ConfigDict()
  # Model family and kind.
  c.model.family = 'lstm'
  c.model.kind = 'encdec'
  # Embedding width.
  c.model.emb_dim = 128
  # LSTM hidden width (per direction).
  c.model.hidden_dim = 256
  # Encoder layers.
  c.model.num_layers = 1
  # Decoder layers.
  c.model.num_decoder_layers = 1
  # Dropout between layers and before the output.
  c.model.dropout_rate = 0.1
  # Bidirectional encoder.
  c.model.bidirectional = True
  # 'bahdanau' (additive), 'luong_dot', 'luong_general' or 'none'.
  c.model.attention = 'bahdanau'
  # Feed the previous attentional vector into the next decoder input.
  c.model.input_feeding = True
  # Output logits through the target embedding (needs emb_dim == hidden_dim).
  c.model.tie_output = False
  # One embedding table for source and target.
  c.model.share_embeddings = True
  # Unused by encdec (classifier pooling).
  c.model.pooling = 'last'
  # Unused by encdec (CRF tagger).
  c.model.use_crf = False
  # Unused by encdec (encoder head).
  c.model.head = ''
  # Computation dtype.
  c.model.dtype = 'float32'
  if 'runlocal' in {o for o in (arg or '').split(',') if o}:
    c.model.emb_dim, c.model.hidden_dim = 32, 32
  return c
