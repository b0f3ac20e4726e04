r"""T5 span-corruption pretraining of a small T5 v1.1-style encoder-decoder on Multi30k text.

    python experiments/train.py --config=configs/pretrain_t5_span.py:/path/to/data --workdir=workdirs/span

The argument is the data directory holding `multi30k/tok/train.lc.norm.tok.{en,de}` (e.g.
shared/data); add `,runlocal` for a smoke test. The text is both languages' training sides
only (never the validation or test files), with one shared SentencePiece vocabulary, so
that a German-target fine-tune finds its words covered; the sentences are concatenated and
cut into 70-token chunks, which corrupt (noise density 0.15, mean span 3: seqio's
defaults) into 64 input and 14 target tokens; 2 % of the chunks are held out for eval.
Sentinels `<extra_id_k>` sit after the 8,000 pieces (seqio's layout), so the model has
8,100 vocabulary rows. The architecture is T5 v1.1's (relative position bias, RMSNorm, no
biases, gated-GELU, unscaled attention, untied logits) at Multi30k's Transformer size.
"""

import ml_collections

from configs import default
from configs import model_sections
from configs import text_task


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = 'DATA_DIR[,runlocal]'."""
  data_dir, options, _ = text_task.parse_arg(arg)
  c = default.get_config()
  c.task = text_task.task_config('text_span_corruption', data_dir)
  c.task.source.type = 'parallel'
  c.task.source.train_files = ['multi30k/tok/train.lc.norm.tok.en',
                               'multi30k/tok/train.lc.norm.tok.de']
  c.task.source.eval_files = []  # held out from the training text: eval_fraction
  c.task.source.eval_fraction = 0.02
  c.task.source.max_eval_examples = 512
  c.task.max_input_length = 64
  c.task.max_target_length = 14  # what 64 input tokens leave (span_corruption.random_spans_helper)
  c.task.bleu_tokenize = 'none'
  c.task.tokenizer.type = 'sentencepiece'
  c.task.tokenizer.model_type = 'bpe'
  c.task.tokenizer.vocab_size = 8000
  c.task.tokenizer.shared = True
  # Sentinel ids after the SentencePiece pieces (T5: 100); fine-tunes keep them.
  c.task.tokenizer.extra_ids = 100
  c.task.span_corruption = ml_collections.ConfigDict({
      # seqio's span_corruption defaults.
      'noise_density': 0.15,
      'mean_noise_span_length': 3.0,
  })
  c.task.batching.mode = 'plain'

  c.model.emb_dim = c.model.qkv_dim = 128
  c.model.mlp_dim = 256
  c.model.num_heads = 4
  c.model.num_encoder_layers = c.model.num_decoder_layers = 4
  c.model.max_len = 64
  c.model.dropout_rate = 0.1
  model_sections.t5_v11(c.model)
  c.optimizer.learning_rate = 5e-3
  c.optimizer.schedule = 'rsqrt'
  c.optimizer.warmup_steps = 1000
  c.train.batch_size = 128
  c.train.num_train_steps = 10000
  c.train.eval_every = 1000
  c.train.checkpoint_every = 500
  c.train.best_metric = 'loss'
  c.train.best_mode = 'min'
  c.eval.batch_size = 256
  c.eval.decode_max_length = 14
  if 'runlocal' in options:
    c.task.source.max_train_examples = 2000
    c.task.source.eval_fraction = 0.05
    c.task.source.max_eval_examples = 32
    c.task.tokenizer.vocab_size = 1000
    c.model.emb_dim = c.model.qkv_dim = 32
    c.model.mlp_dim = 64
    c.model.num_encoder_layers = c.model.num_decoder_layers = 1
    c.optimizer.warmup_steps = 5
    c.train.batch_size = 16
    c.train.num_train_steps, c.train.log_every, c.train.eval_every = 40, 10, 20
  return c
