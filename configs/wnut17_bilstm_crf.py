r"""BiLSTM-CRF named-entity tagger on WNUT-17 (emerging and rare entities, BIO, 6 types).

    python experiments/train.py --config=configs/wnut17_bilstm_crf.py:/path/to/data --workdir=workdirs/wnut17

With word vectors trained on local text (the training splits of the corpora in DATA;
never a test set), as the results table's best row:

    python experiments/train_word_vectors.py --lowercase --dim=100 --output=$PWD/vectors/local_en100.txt \
        --input=words:DATA/aeslc/enron_subject_line_train.tar.gz,words:DATA/tinyshakespeare/input.txt,DATA/wnut17/wnut17train.conll,DATA/sst2/glue/train.tsv,DATA/ptb/ptb.train.txt,DATA/multi30k/tok/train.lc.norm.tok.en
    python experiments/train.py --config=configs/wnut17_bilstm_crf.py:DATA,traindev,vectors=$PWD/vectors/local_en100.txt --workdir=workdirs/wnut17_vec

The argument is the data directory holding `wnut17/{wnut17train.conll,emerging.dev.conll}`;
add `,runlocal` for a smoke test. Add `,traindev` to train on train + dev, as the shared
task allowed (training is tweets; dev's YouTube comments are closer to the test's Reddit
and StackExchange text): dev is then no longer held out, so evaluate the `last`
checkpoint after the step budget chosen on a train-only run; `,traindev=K` adds dev K times
(K=3 helped on a held-out half of dev but not on test; see the README). `vectors=PATH` (absolute, or
relative to DATA) starts the embeddings from a GloVe / word2vec text file of width
`vectors_dim` (default 100) and gives every word of the file an id. Reference test entity F1:
40.42 (SJTU-Adapt BiLSTM-CRF), 41.86 (UH-RiTUAL), both with pretrained embeddings and
character features.
"""

import ml_collections

from configs import default
from configs import model_sections
from configs import text_task

TYPES = ('corporation', 'creative-work', 'group', 'location', 'person', 'product')


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = 'DATA_DIR[,runlocal][,traindev[=K]][,vectors=PATH[,vectors_dim=100]]'."""
  data_dir, options, values = text_task.parse_arg(arg)
  c = default.get_config()
  c.task = text_task.task_config('text_tag', data_dir)
  c.task.source.type = 'conll'
  c.task.source.train_files = ['wnut17/wnut17train.conll']
  # traindev[=K]: dev added to the training files K times (default 1), weighting it K-fold.
  repeat = values.get('traindev', '1' if 'traindev' in options else '0')
  if not repeat.isdigit() or ('traindev' in values and int(repeat) < 1):
    raise ValueError(f'configs/wnut17_bilstm_crf.py argument traindev={repeat}: expected a '
                     'positive integer (how many times dev joins the training files)')
  c.task.source.train_files += ['wnut17/emerging.dev.conll'] * int(repeat)
  c.task.source.eval_files = ['wnut17/emerging.dev.conll']
  c.task.source.test_files = ['wnut17/emerging.test.annotated']
  # Tag set (ids 1..13; 0 is padding).
  c.task.source.labels = ['O'] + [f'{p}-{t}' for t in TYPES for p in ('B', 'I')]
  c.task.max_input_length = 64
  c.task.tokenizer.type = 'word'
  c.task.tokenizer.vocab_size = 0
  c.task.tokenizer.min_count = 1
  # Word ids are lowercased (fewer, better-trained rows); case and spelling come from the
  # character CNN over each word's bytes (first 20).
  c.task.tokenizer.lowercase = True
  c.task.word_chars = 20
  c.task.batching.mode = 'plain'

  c.model = model_sections.lstm(
      kind='encoder',
      emb_dim=100,
      hidden_dim=200,
      dropout_rate=0.5,
      attention='none',
      input_feeding=False,
      use_crf=True,
      head='tag',
      char_dim=30,
      char_filters=100,
      char_width=3,
      # Emerging entities are mostly words training never saw: <unk> must be trained.
      word_dropout=0.25)
  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_steps = 100
  c.train.batch_size = 32
  c.train.num_train_steps = 3000
  c.train.label_smoothing = 0.0
  c.train.eval_every = c.train.checkpoint_every = 250
  c.train.best_metric = 'entity_f1'
  c.train.best_mode = 'max'
  c.eval.batch_size = 256
  if 'runlocal' in options:
    c.task.source.max_train_examples, c.task.source.max_eval_examples = 500, 64
    c.model.emb_dim = c.model.hidden_dim = 32
    c.optimizer.warmup_steps = 5
    c.train.num_train_steps, c.train.log_every = 20, 5
    c.train.eval_every = c.train.checkpoint_every = 10
    c.train.batch_size, c.eval.batch_size = 16, 64
  text_task.use_vectors(c, values)  # pretrained word vectors (see the docstring)
  return c
