r"""BERT masked-LM pretraining of a small Transformer encoder on local English text.

    python experiments/train.py --config=configs/pretrain_bert_mlm.py:/path/to/data --workdir=workdirs/mlm

The argument is the data directory (e.g. shared/data) holding the training splits it reads:
Multi30k's English side and the Penn Treebank (never a validation or test file); add
`,runlocal` for a smoke test, `,text=sst2` to pretrain on the text of SST-2's training
split instead (sst2/glue/train.tsv, its labels unused: in-domain text for the fine-tune
of configs/sst2_mlm_finetune.py; `text_task.use_pretraining_text`). Sentences are joined
with EOS between them and cut into 64-token rows (RoBERTa's full-sentence rows); 15 % of the regular tokens are selected,
80 % of those become [MASK], 10 % a random token, 10 % stay (lmjax/data/masked_lm.py),
drawn anew every epoch; the loss counts the selected positions only. [MASK] is the one id
after the 8,000 SentencePiece pieces (`tokenizer.extra_ids = 1`). 2 % of the rows are held
out for eval. The encoder keeps BERT's head (dense + GELU + LayerNorm, logits tied to the
embeddings plus a bias); a classifier fine-tune replaces that head with its own.
"""

import ml_collections

from configs import default
from configs import model_sections
from configs import text_task


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = 'DATA_DIR[,text=general|sst2][,runlocal]'."""
  data_dir, options, values = text_task.parse_arg(arg)
  c = default.get_config()
  c.task = text_task.task_config('text_masked_lm', data_dir)
  c.task.source.type = 'monolingual'
  c.task.source.train_files = ['multi30k/tok/train.lc.norm.tok.en', 'ptb/ptb.train.txt']
  text_task.use_pretraining_text(c, values, 'pretrain_bert_mlm.py')
  c.task.source.eval_files = []  # held out from the training text: eval_fraction
  c.task.source.eval_fraction = 0.02
  c.task.source.max_eval_examples = 512
  c.task.max_input_length = 64
  c.task.tokenizer.type = 'sentencepiece'
  c.task.tokenizer.vocab_size = 8000
  c.task.tokenizer.lowercase = True
  c.task.tokenizer.shared = True
  c.task.tokenizer.extra_ids = 1  # [MASK]
  c.task.masked_lm = ml_collections.ConfigDict({
      # BERT's rates (Devlin et al., 2019, §3.1).
      'select_rate': 0.15,
      'mask_fraction': 0.8,
      'random_fraction': 0.1,
  })
  c.task.batching.mode = 'plain'

  c.model = model_sections.transformer_encoder(
      head='mlm', emb_dim=128, qkv_dim=128, mlp_dim=512, num_heads=4, num_encoder_layers=4,
      max_len=64, position='learned')
  c.model.mlp_activation = 'gelu'
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = 'cosine'
  c.optimizer.warmup_steps = 200
  c.optimizer.weight_decay = 0.01
  c.train.batch_size = 64
  # ~1.35 steps/s alone on 2 CPU cores: 2,000 steps fit the 30-minute pretraining budget.
  c.train.num_train_steps = 2000
  c.train.eval_every = 500
  c.train.checkpoint_every = 250
  c.train.best_metric = 'loss'
  c.train.best_mode = 'min'
  c.eval.batch_size = 256
  if 'runlocal' in options:
    c.task.source.max_train_examples = 2000
    c.task.source.eval_fraction = 0.05
    c.task.source.max_eval_examples = 32
    c.task.tokenizer.vocab_size = 1000
    c.model.emb_dim = c.model.qkv_dim = 32
    c.model.mlp_dim = 64
    c.model.num_encoder_layers = 1
    c.optimizer.warmup_steps = 5
    c.train.batch_size = 16
    c.train.num_train_steps, c.train.log_every, c.train.eval_every = 40, 10, 20
  return c
