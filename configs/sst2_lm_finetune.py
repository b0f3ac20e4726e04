r"""SST-2 with an LSTM classifier initialised from a language model (Dai & Le, 2015): from
scratch, or from a configs/pretrain_lstm_lm.py run (`init_from=WORKDIR`).

    python experiments/train.py --config=configs/sst2_lm_finetune.py:/path/to/data --workdir=workdirs/sst2_lstm
    python experiments/train.py --config=configs/sst2_lm_finetune.py:/path/to/data,init_from=workdirs/lstm_lm \
        --workdir=workdirs/sst2_lstm_lm

The argument is the data directory (sst2/ as configs/sst2_bilstm.py reads it); add
`,runlocal` for a smoke test (pretrain with `,runlocal` too), `,labelled=N` to train on the
first N labelled examples. The classifier is the LM's network read left to right (one
unidirectional layer, the LM's width and SentencePiece vocabulary) with a fresh head on its
last state; a warm start maps the LM's `lstm/*` layers onto the encoder's `encoder/*`,
loads the embedding and leaves out the LM's output layer (`config.train.init_rules`,
`init_skip`; WORKDIR/init_report.json lists them).
"""

import ml_collections

from configs import model_sections
from configs import pretrain_lstm_lm
from configs import sst2_bilstm
from configs import text_task


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = 'DATA_DIR[,init_from=WORKDIR][,labelled=N][,runlocal]'."""
  _, options, values = text_task.parse_arg(arg)
  base_arg = ','.join(p for p in (arg or '').split(',') if '=' not in p)
  c = sst2_bilstm.get_config(base_arg)
  lm = pretrain_lstm_lm.get_config(base_arg).model
  c.task.tokenizer = pretrain_lstm_lm.get_config(base_arg).task.tokenizer
  c.task.word_chars = 0
  c.model = model_sections.lstm(
      kind='encoder', head='classify', pooling='last', emb_dim=lm.emb_dim,
      hidden_dim=lm.hidden_dim, num_layers=lm.num_layers, dropout_rate=lm.dropout_rate,
      bidirectional=False)
  c.task.batching.mode = 'plain'
  if values.get('labelled'):
    c.task.source.max_train_examples = int(values['labelled'])
  c.train.ema_decay = 0.0
  text_task.use_fine_tune_protocol(c, options)
  c.train.init_from = values.get('init_from', '')
  if c.train.init_from:
    c.train.init_rules = [('encoder/(.*)', r'lstm/\1'), ('head/.*', None),
                          ('embed/.*', r'\g<0>')]
    c.train.init_skip = ['output/.*']  # the LM's next-token layer
  return c


def get_sweep(arg: str = 'lr') -> list:
  """Sweeps for `launch.sh local configs/sst2_lm_finetune.py:DATA[,init_from=W] --sweep NAME`:
  'lr' (the rate grid (3e-4, 1e-3, 3e-3)) or 'seeds' (`text_task.fine_tune_sweep`)."""
  return text_task.fine_tune_sweep(arg, (3e-4, 1e-3, 3e-3), 'sst2_lm_finetune.py')
