r"""LSTM encoder-decoder with attention on Multi30k En→De (lowercased, tokenized `tok/` files).

    python experiments/train.py --config=configs/multi30k_lstm.py:/path/to/data --workdir=workdirs/m30k_lstm
    python experiments/evaluate.py --workdir=workdirs/m30k_lstm --checkpoint=best --split=test --beam_size=5

The argument is the data directory holding `multi30k/tok/*.lc.norm.tok.{en,de}`; add
`,runlocal` for a smoke test. Same task, tokenizer and metrics as
configs/multi30k_transformer.py (joint BPE 8k, tokenized BLEU with sacreBLEU
tokenize='none'); the model is a Bahdanau-attention LSTM (bidirectional 2-layer
encoder, 1-layer decoder with input feeding, 256 units, dropout 0.3). Sentences are
batched in length buckets (no packing for recurrent models).
"""

import ml_collections

from configs import model_sections
from configs import multi30k_transformer


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = 'DATA_DIR[,runlocal]'."""
  c = multi30k_transformer.get_config(arg)
  runlocal = c.model.emb_dim < 128
  c.model = model_sections.lstm(
      kind='encdec',
      emb_dim=256,
      hidden_dim=256,
      num_layers=2,
      num_decoder_layers=1,
      dropout_rate=0.3,
      bidirectional=True,
      attention='bahdanau',
      input_feeding=True,
      share_embeddings=True)
  c.task.batching.mode = 'bucket'
  c.task.batching.bucket_lengths = [16, 32, 64]
  c.task.batching.max_tokens = 2048  # ~100 sentence pairs of 20 tokens
  c.train.batch_size = 16  # every bucket's rows are a multiple of this
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 500
  c.train.num_train_steps = 8_000  # ~28 epochs of ~290 steps; 1.5 h alone on 2 cores
  c.train.eval_every = c.train.checkpoint_every = 1000
  if runlocal:
    c.model.emb_dim = c.model.hidden_dim = 32
    c.model.num_layers = 1
    c.task.batching.bucket_lengths = [16, 32]
    c.task.batching.max_tokens = 512
    c.optimizer.warmup_steps = 5
  return c
