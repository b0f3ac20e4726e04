r"""Character-level decoder-only Transformer on tiny Shakespeare (nanoGPT's shakespeare_char).

    python experiments/train.py --config=configs/shakespeare_char.py:/path/to/data --workdir=workdirs/shakespeare

The argument is the data directory holding `tinyshakespeare/input.txt`; add `,runlocal`
for a smoke test. As nanoGPT: the first 90% of characters train, the last 10% evaluate;
the text is one stream cut into 64-character rows, each starting from BOS (so a row's
first character is predicted without context, which nanoGPT's random windows never do;
`task.source.stream_context=True` gives nanoGPT's windows, but trained 0.04 worse here:
1.919 vs 1.883). Model and schedule = nanoGPT's CPU config (`--block_size=64
--batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000
--lr_decay_iters=2000 --dropout=0.0`: AdamW lr 1e-3 → 1e-4 cosine, 100 warmup steps,
beta2 0.99, weight decay 0.1 on matrices only, clip 1.0, exact GELU), whose val loss is 1.88.
The initialisation stays lmjax's default 'xavier': nanoGPT's own (`--config.model.init=gpt2`,
N(0, 0.02) with unscaled embeddings) trained worse here: val loss 1.934 vs 1.883.
nanoGPT's bias-free layers (`--config.model.use_bias=False`: 1.882) and new windows every
epoch (`--config.task.batching.mode=windows`: 1.881) made no difference. The eval metric
`nll_in_context` (1.860) leaves out each row's BOS-only first character, as nanoGPT scores.
"""

import ml_collections

from configs import default
from configs import text_task


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = 'DATA_DIR[,runlocal]'."""
  data_dir, options, _ = text_task.parse_arg(arg)
  c = default.get_config()
  c.task = text_task.task_config('text_lm', data_dir)
  c.task.source.type = 'monolingual'
  c.task.source.train_files = ['tinyshakespeare/input.txt']
  # No eval file: the last eval_fraction of the characters.
  c.task.source.eval_files = []
  c.task.source.lm_mode = 'stream'
  c.task.source.eval_fraction = 0.1
  c.task.max_target_length = 64
  c.task.tokenizer.type = 'char'
  c.task.tokenizer.vocab_size = 0
  c.task.batching.mode = 'plain'

  c.model.kind = 'decoder'
  c.model.share_embeddings = True
  c.model.tie_output = True
  c.model.emb_dim = c.model.qkv_dim = 128
  c.model.mlp_dim = 512
  c.model.num_heads = 4
  c.model.num_encoder_layers = 0
  c.model.num_decoder_layers = 4
  c.model.max_len = 64
  c.model.dropout_rate = 0.0
  c.model.position = 'learned'
  c.model.mlp_activation = 'gelu'  # as nanoGPT
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100
  c.optimizer.b2 = 0.99
  c.optimizer.eps = 1e-8
  c.optimizer.end_learning_rate_factor = 0.1  # 1e-3 → 1e-4
  c.optimizer.weight_decay = 0.1
  c.optimizer.decay_matrices_only = True  # as nanoGPT: biases and LayerNorms not decayed
  c.train.batch_size = 12
  c.train.num_train_steps = 2000
  c.train.label_smoothing = 0.0
  c.train.eval_every = c.train.checkpoint_every = 250
  c.train.best_metric = 'loss'
  c.train.best_mode = 'min'
  c.eval.batch_size = 64
  if 'runlocal' in options:
    c.task.max_target_length = c.model.max_len = 64
    c.model.emb_dim = c.model.qkv_dim = 32
    c.model.mlp_dim = 64
    c.model.num_decoder_layers = 1
    c.optimizer.warmup_steps = 5
    c.train.num_train_steps, c.train.log_every = 20, 5
    c.train.eval_every = c.train.checkpoint_every = 10
    c.train.batch_size, c.eval.batch_size = 16, 64
  return c
