r"""Multi30k En→De with the T5 v1.1-style model of configs/pretrain_t5_span.py: from scratch,
or fine-tuned from a span-corruption run (`init_from=WORKDIR`).

    python experiments/train.py --config=configs/multi30k_t5.py:/path/to/data --workdir=workdirs/m30k_t5
    python experiments/train.py --config=configs/multi30k_t5.py:/path/to/data,init_from=workdirs/span \
        --workdir=workdirs/m30k_t5_ft

The argument is the data directory holding `multi30k/tok/*` (e.g. shared/data); add
`,runlocal` for a smoke test (then give the pretraining run `,runlocal` too: the sizes
must match). The task is configs/multi30k_transformer.py's; the tokenizer and model are
the pretraining config's (8,000 BPE pieces + 100 sentinels, one shared vocabulary), so
both arms of a pretrained-vs-scratch comparison train the same network. A warm start
copies the pretraining run's tokenizer (tokenizers/vocab.json), trained on both
languages' training sides.
"""

import ml_collections

from configs import model_sections
from configs import multi30k_transformer
from configs import pretrain_t5_span
from configs import text_task


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = 'DATA_DIR[,init_from=WORKDIR][,runlocal]'."""
  _, options, values = text_task.parse_arg(arg)
  base_arg = ','.join(p for p in (arg or '').split(',') if not p.startswith('init_from='))
  c = multi30k_transformer.get_config(base_arg)
  pretrain = pretrain_t5_span.get_config(base_arg)
  c.task.tokenizer = pretrain.task.tokenizer
  c.model = model_sections.t5_v11(pretrain.model)
  c.model.dropout_rate = 0.1  # fine-tuning dropout (T5)
  c.model.max_len = c.task.max_input_length
  c.train.init_from = values.get('init_from', '')
  if 'runlocal' in options:
    c.task.tokenizer.vocab_size = pretrain.task.tokenizer.vocab_size
  return c
