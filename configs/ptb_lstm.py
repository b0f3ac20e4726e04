r"""Word-level LSTM language model on Penn Treebank: Zaremba et al. (2014) "small".

    python experiments/train.py --config=configs/ptb_lstm.py:/path/to/data --workdir=workdirs/ptb
    python experiments/evaluate.py --workdir=workdirs/ptb --checkpoint=best --split=test

The argument is the data directory holding `ptb/ptb.{train,valid,test}.txt` (Mikolov's
10k-word version); add `,runlocal` for a smoke test. As the TensorFlow ptb_word_lm
tutorial's "small" config (test perplexity 115.91): the corpus is one token stream
(EOS after each sentence) in 20 rows, truncated BPTT over 20-token windows with the
LSTM state carried across batches, 2 layers × 200 units, no dropout, untied softmax,
plain SGD at learning rate 1 halved every epoch after the 4th, gradients clipped at
norm 5, 13 epochs (2323 steps each). The tutorial's cost is the *sum* over the 20
time steps of the batch-mean loss, while lmjax averages over all tokens: its gradient
is 20× ours, so the same updates are learning rate 20 with clipping at norm 5/20 = 0.25
(also the PyTorch word_language_model defaults). Eval perplexity is computed the same way (state
carried) over the validation stream; the test split only with --split=test.
"""

import ml_collections

from configs import default
from configs import model_sections
from configs import text_task


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = 'DATA_DIR[,runlocal]'."""
  data_dir, options, _ = text_task.parse_arg(arg)
  c = default.get_config()
  c.task = text_task.task_config('text_lm', data_dir)
  c.task.source.type = 'monolingual'
  c.task.source.train_files = ['ptb/ptb.train.txt']
  c.task.source.eval_files = ['ptb/ptb.valid.txt']
  c.task.source.test_files = ['ptb/ptb.test.txt']
  c.task.source.lm_mode = 'stream'
  c.task.max_target_length = 20  # BPTT window
  # The files already map rare words to <unk> (10k types): keep every word.
  c.task.tokenizer.type = 'word'
  c.task.tokenizer.vocab_size = 0
  c.task.tokenizer.min_count = 1
  c.task.batching.mode = 'plain'

  c.model = model_sections.lstm(
      kind='decoder',
      emb_dim=200,
      hidden_dim=200,
      num_layers=2,
      dropout_rate=0.0,
      bidirectional=False,
      attention='none',
      input_feeding=False,
      tie_output=False)
  steps_per_epoch = 2323  # (929,589 tokens // 20 rows - 19) // 20 steps
  c.optimizer.name = 'sgd'
  c.optimizer.b1 = 0.0  # no momentum
  c.optimizer.learning_rate = 20.0  # = TF's 1.0 on a loss summed over 20 steps
  c.optimizer.schedule = 'step'
  c.optimizer.warmup_steps = 0
  c.optimizer.decay_rate = 0.5
  c.optimizer.decay_every = steps_per_epoch
  c.optimizer.decay_begin = 4 * steps_per_epoch
  c.optimizer.weight_decay = 0.0
  c.optimizer.grad_clip_norm = 0.25  # = TF's 5.0 on the summed loss
  # Truncated BPTT: the state carried across batches of the token stream.
  c.train.stateful = True
  c.train.batch_size = 20
  c.train.num_train_steps = 13 * steps_per_epoch
  c.train.label_smoothing = 0.0
  c.train.eval_every = c.train.checkpoint_every = steps_per_epoch
  c.train.log_every = 500
  c.train.best_metric = 'perplexity'
  c.train.best_mode = 'min'
  c.eval.batch_size = 20
  if 'runlocal' in options:
    c.task.source.max_train_examples = 0
    c.model.emb_dim = c.model.hidden_dim = 32
    c.optimizer.warmup_steps = 5
    c.train.num_train_steps, c.train.log_every = 20, 5
    c.train.eval_every = c.train.checkpoint_every = 10
    c.train.batch_size, c.eval.batch_size = 16, 64
  return c
