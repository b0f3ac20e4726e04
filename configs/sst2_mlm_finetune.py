r"""SST-2 sentence classification with the encoder of configs/pretrain_bert_mlm.py: from
scratch, or fine-tuned from a masked-LM run (`init_from=WORKDIR`) with a new head.

    python experiments/train.py --config=configs/sst2_mlm_finetune.py:/path/to/data --workdir=workdirs/sst2_scratch
    python experiments/train.py --config=configs/sst2_mlm_finetune.py:/path/to/data,init_from=workdirs/mlm \
        --workdir=workdirs/sst2_mlm

The argument is the data directory (sst2/ as configs/sst2_bilstm.py reads it); add
`,runlocal` for a smoke test (then pretrain with `,runlocal` too: the sizes must match),
`,labelled=N` to train on the first N labelled examples only (the pretraining comparison
uses 1,000). The tokenizer and encoder are the pretraining config's (SentencePiece 8,000
pieces + [MASK], 4 layers of width 128, learned positions); a warm start copies the
pretraining run's tokenizer, loads every encoder and embedding parameter, skips the
masked-LM head and starts the classifier head fresh (`config.train.init_rules`,
`init_skip`; WORKDIR/init_report.json lists them). Both arms train the same network.
"""

import ml_collections

from configs import pretrain_bert_mlm
from configs import sst2_bilstm
from configs import text_task


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = 'DATA_DIR[,init_from=WORKDIR][,labelled=N][,runlocal]'."""
  _, options, values = text_task.parse_arg(arg)
  base_arg = ','.join(p for p in (arg or '').split(',') if '=' not in p)
  c = sst2_bilstm.get_config(base_arg)
  pretrain = pretrain_bert_mlm.get_config(base_arg)
  c.task.tokenizer = pretrain.task.tokenizer
  c.task.max_input_length = pretrain.task.max_input_length
  c.task.word_chars = 0
  c.task.batching.mode = 'plain'
  c.model = pretrain.model
  c.model.head = 'classify'
  c.model.pooling = 'mean'
  if values.get('labelled'):
    c.task.source.max_train_examples = int(values['labelled'])
  c.train.ema_decay = 0.0
  text_task.use_fine_tune_protocol(c, options)
  c.optimizer.learning_rate = 1e-4 if values.get('init_from') else 5e-4
  c.train.init_from = values.get('init_from', '')
  if c.train.init_from:
    # The masked-LM head is left out; the classifier head starts fresh.
    c.train.init_rules = [('head/.*', None), ('(.*)', r'\1')]
    c.train.init_skip = ['head/.*']
  return c


def get_sweep(arg: str = 'lr') -> list:
  """Sweeps for `launch.sh local configs/sst2_mlm_finetune.py:DATA[,init_from=W] --sweep NAME`:
  'lr' (the rate grid (1e-4, 3e-4, 1e-3)) or 'seeds' (`text_task.fine_tune_sweep`)."""
  return text_task.fine_tune_sweep(arg, (1e-4, 3e-4, 1e-3), 'sst2_mlm_finetune.py')
