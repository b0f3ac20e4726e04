r"""Transformer encoder-decoder on Multi30k En→De (lowercased, tokenized `tok/` files).

    python experiments/train.py --config=configs/multi30k_transformer.py:/path/to/data --workdir=workdirs/m30k

The argument is the data directory holding `multi30k/tok/*.lc.norm.tok.{en,de}` (e.g.
shared/data); add `,runlocal` for a smoke test, `,student` for the half-width student of
docs/COMPRESSION.md (d 64, ffn 128; distillation, `experiments/distill.py`). Model after Wu et al. 2021's
Transformer-tiny (4+4 layers, d 128, ffn 256, 4 heads, shared embeddings, dropout 0.3),
joint BPE 8k trained on the training split (cached in WORKDIR/tokenizers). BLEU is
computed on the tokenized lowercased text (sacreBLEU tokenize='none'). Test number:

    python experiments/evaluate.py --workdir=workdirs/m30k --average_last=10 --split=test --beam_size=5 --alpha=1.5
"""

import ml_collections

from configs import default
from configs import text_task


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = 'DATA_DIR[,student][,runlocal]'."""
  data_dir, options, _ = text_task.parse_arg(arg)
  c = default.get_config()
  c.task = text_task.task_config('text_seq2seq', data_dir)
  c.task.source.type = 'parallel'
  # [source, target] line-aligned files.
  c.task.source.train_files = ['multi30k/tok/train.lc.norm.tok.en', 'multi30k/tok/train.lc.norm.tok.de']
  c.task.source.eval_files = ['multi30k/tok/val.lc.norm.tok.en', 'multi30k/tok/val.lc.norm.tok.de']
  c.task.source.test_files = ['multi30k/tok/test_2016_flickr.lc.norm.tok.en',
                              'multi30k/tok/test_2016_flickr.lc.norm.tok.de']
  c.task.max_input_length = 64
  c.task.max_target_length = 64
  c.task.length_handling = 'filter'
  c.task.bleu_tokenize = 'none'
  c.task.tokenizer.type = 'sentencepiece'
  c.task.tokenizer.model_type = 'bpe'
  c.task.tokenizer.vocab_size = 8000
  c.task.tokenizer.shared = True
  # Several sentence pairs per 64-token row (~4 on Multi30k).
  c.task.batching.mode = 'pack'

  c.model.emb_dim = c.model.qkv_dim = 128
  c.model.mlp_dim = 256
  c.model.num_heads = 4
  c.model.num_encoder_layers = c.model.num_decoder_layers = 4
  c.model.max_len = 64
  c.model.dropout_rate = 0.3
  # Wu et al.'s schedule (github.com/LividWo/Revisit-MMT, README-baseline.md: Adam,
  # --lr 0.005 --warmup-updates 2000, inverse square root). The earlier 1e-3 peak with
  # cosine decay gave test BLEU 37.98 after 6,000 steps, validation BLEU still rising.
  c.optimizer.learning_rate = 5e-3
  c.optimizer.schedule = 'rsqrt'
  c.optimizer.warmup_steps = 2000
  c.train.batch_size = 64  # packed rows (~250 sentence pairs, ~3,400 target tokens)
  # ~260 epochs of ~92 packed steps: ~7.3 h alone on a 2-core CPU at 1.05-1.15 s/step.
  # Wu et al. train 8,000 updates of 2 x 4,096 tokens (~65 M); ours hold ~3,400 target
  # tokens and validation BLEU kept rising past the matching ~19,000 steps. Validation BLEU
  # (beam 5, average of the last 10 checkpoints, alpha 1.5): 41.24 / 41.60 / 41.98 after
  # 8,000 / 16,000 / 24,000 steps. The last 10 checkpoints are averaged for the test number,
  # as Wu et al. do (the docstring's command; alpha 1.0 gave 41.83 at 24,000, 41.45 at 16,000).
  c.train.num_train_steps = 24000
  c.train.eval_every = 1000
  c.train.checkpoint_every = 200
  c.train.keep_checkpoints = 10
  c.train.best_metric = 'bleu'
  c.eval.batch_size = 256
  c.eval.decode_max_length = 64
  if 'student' in options:  # half the width (distillation students, docs/COMPRESSION.md)
    c.model.emb_dim = c.model.qkv_dim = 64
    c.model.mlp_dim = 128
  if 'runlocal' in options:
    c.task.source.max_train_examples, c.task.source.max_eval_examples = 2000, 64
    c.task.tokenizer.vocab_size = 1000
    c.task.max_input_length = c.task.max_target_length = c.model.max_len = 32
    c.model.emb_dim = c.model.qkv_dim = 32
    c.model.mlp_dim = 64
    c.model.num_encoder_layers = c.model.num_decoder_layers = 1
    c.optimizer.warmup_steps = 5
    c.train.num_train_steps, c.train.log_every = 20, 5
    c.train.eval_every = c.train.checkpoint_every = 10
    c.train.batch_size, c.eval.batch_size = 16, 64
    c.eval.decode_max_length = 32
  return c
