r"""Transformer encoder-decoder for email subject-line generation on AESLC.

    python experiments/train.py --config=configs/aeslc_transformer.py:/path/to/data --workdir=workdirs/aeslc

The argument is the data directory holding `aeslc/enron_subject_line_{train,dev}.tar.gz`
(one `*.subject` file per email: body, `@subject`, subject line); add `,runlocal` for a
smoke test. Bodies are cut to their first 128 subword tokens (the subject usually names
what the opening says); subjects to 32. Scored with BLEU, chrF and ROUGE against the
`@subject` line. The budget (1500 steps of 4096 body tokens, ~4 epochs) fits about an hour
on a 2-core CPU.
"""

import ml_collections

from configs import default
from configs import text_task


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = 'DATA_DIR[,runlocal]'."""
  data_dir, options, _ = text_task.parse_arg(arg)
  c = default.get_config()
  c.task = text_task.task_config('text_seq2seq', data_dir)
  c.task.source.type = 'summaries'
  c.task.source.train_files = ['aeslc/enron_subject_line_train.tar.gz']
  c.task.source.eval_files = ['aeslc/enron_subject_line_dev.tar.gz']
  c.task.source.test_files = ['aeslc/enron_subject_line_test.tar.gz']
  # Emails contain stray non-UTF-8 bytes: replace them rather than stop.
  c.task.source.encoding_errors = 'replace'
  c.task.max_input_length = 128
  c.task.max_target_length = 32
  c.task.length_handling = 'truncate'
  c.task.decode_metrics = 'rouge'
  c.task.tokenizer.type = 'sentencepiece'
  c.task.tokenizer.model_type = 'unigram'
  c.task.tokenizer.vocab_size = 8000
  c.task.tokenizer.max_sentences = 200_000
  c.task.tokenizer.shared = True
  # Bodies vary from a few to hundreds of tokens: length buckets under a token budget.
  c.task.batching.mode = 'bucket'
  c.task.batching.bucket_lengths = [32, 64, 128]
  c.task.batching.max_tokens = 4096

  c.model.emb_dim = c.model.qkv_dim = 256
  c.model.mlp_dim = 1024
  c.model.num_heads = 4
  c.model.num_encoder_layers = c.model.num_decoder_layers = 3
  c.model.max_len = 128
  c.model.dropout_rate = 0.1
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 500
  # Bucket mode: every bucket's rows are a multiple of this.
  c.train.batch_size = 8
  c.train.num_train_steps = 1500
  c.train.eval_every = c.train.checkpoint_every = 500
  c.train.best_metric = 'rouge1'
  c.eval.batch_size = 64
  c.eval.decode_max_length = 32
  if 'runlocal' in options:
    c.task.source.max_train_examples, c.task.source.max_eval_examples = 1000, 32
    c.task.tokenizer.vocab_size = 1000
    c.task.max_input_length = c.model.max_len = 64
    c.task.max_target_length = 16
    c.task.batching.bucket_lengths = [32, 64]
    c.task.batching.max_tokens = 1024
    c.model.emb_dim = c.model.qkv_dim = 32
    c.model.mlp_dim = 64
    c.model.num_encoder_layers = c.model.num_decoder_layers = 1
    c.optimizer.warmup_steps = 5
    c.train.num_train_steps, c.train.log_every = 20, 5
    c.train.eval_every = c.train.checkpoint_every = 10
    c.eval.batch_size = 32
    c.eval.decode_max_length = 16
  return c
