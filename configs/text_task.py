r"""Shared pieces of the real-data configs: the generic `config.task` and argument parsing.

Not a runnable config itself; see e.g. configs/multi30k_transformer.py, which runs as

    python experiments/train.py --config=configs/multi30k_transformer.py:/path/to/data --workdir=workdirs/m30k
"""

from typing import Dict, Set, Tuple

import ml_collections


def parse_arg(arg: str) -> Tuple[str, Set[str], Dict[str, str]]:
  """'DATA_DIR[,runlocal]' or 'data_dir=DATA_DIR,runlocal' → (data_dir, flags, key=values)."""
  data_dir, flags, values = '', set(), {}
  for item in (arg or '').split(','):
    if not item:
      continue
    if '=' in item:
      key, value = item.split('=', 1)
      values[key] = value
    elif '/' in item or item.startswith('.') or item.startswith('~'):
      data_dir = item
    else:
      flags.add(item)
  return values.pop('data_dir', data_dir), flags, values


def use_vectors(c: ml_collections.ConfigDict, values: Dict[str, str]) -> None:
  """Applies the config argument's `vectors=PATH[,vectors_dim=N]` (word tasks), if given.

  Every word of the vectors file gets an id (words training never saw keep their vector),
  and the embedding width becomes the vectors' (default 100).
  """
  if values.get('vectors'):
    c.task.tokenizer.vectors = values['vectors']
    c.task.tokenizer.vectors_vocab = 100_000
    c.model.emb_dim = int(values.get('vectors_dim', 100))


def use_pretraining_text(c: ml_collections.ConfigDict, values: Dict[str, str],
                         config_name: str) -> None:
  """Applies a pretraining config's `text=general|sst2` argument to `c.task.source`.

  'general' keeps the config's own files; 'sst2' reads the text of SST-2's training split
  (sst2/glue/train.tsv: 67,349 phrases, labels unused), in-domain text for the SST-2
  fine-tunes, as Dai & Le (2015) pretrain on the task's own unlabelled text.
  """
  text = values.get('text', 'general')
  if text == 'sst2':
    c.task.source.type = 'tsv'  # `phrase<TAB>label` with a header line; the text only
    c.task.source.labels = ['0', '1']
    c.task.source.train_files = ['sst2/glue/train.tsv']
  elif text != 'general':
    raise ValueError(f"configs/{config_name}: text={text!r}; valid: 'general' (the config's "
                     "own training text), 'sst2'")


def use_fine_tune_protocol(c: ml_collections.ConfigDict, options: Set[str]) -> None:
  """The pretraining comparison's fine-tune schedule (docs/PRETRAINING.md): 1,000 steps of
  32 rows, evals and checkpoints every 100, 50 warmup steps; 20 steps with `runlocal`."""
  c.train.batch_size = 32
  c.train.num_train_steps = 1000
  c.train.eval_every = c.train.checkpoint_every = 100
  c.optimizer.warmup_steps = 50
  if 'runlocal' in options:
    c.train.num_train_steps, c.train.eval_every = 20, 10
    c.train.checkpoint_every = 10
    c.optimizer.warmup_steps = 5


def fine_tune_sweep(arg: str, rates: Tuple[float, ...], config_name: str) -> list:
  """The pretraining comparison's sweeps of a fine-tune config (docs/PRETRAINING.md):
  'lr' picks the learning rate from `rates` on the validation split (seed 0), 'seeds'
  repeats a run (the chosen rate given as --config.optimizer.learning_rate=...).

  Returns:
    One dict of overrides (dotted field → value) per trial.
  """
  sweeps = {
      'lr': [{'optimizer.learning_rate': lr} for lr in rates],
      'seeds': [{'seed': s, 'data_seed': s} for s in (0, 1, 2)],
  }
  if arg not in sweeps:
    raise ValueError(f'configs/{config_name}: no sweep {arg!r}; valid: {sorted(sweeps)}')
  return sweeps[arg]


def task_config(name: str, data_dir: str) -> ml_collections.ConfigDict:
  """The generic task section (lmjax.data.tasks text_* builders) with every field.

  Args:
    name: 'text_seq2seq', 'text_lm', 'text_classify' or 'text_tag'.
    data_dir: directory the file names are relative to ('' = as given).

  Returns:
    config.task; the caller sets the source files and sizes.
  """
  t = ml_collections.ConfigDict()
  # Registered task name (lmjax.data.tasks.TASKS).
  t.name = name
  # Directory that source.train_files / eval_files are relative to (the config argument).
  t.data_dir = data_dir
  # Static source length (tokens) for seq2seq / classify / tag.
  t.max_input_length = 64
  # Static target length (tokens, EOS included) for seq2seq / lm.
  t.max_target_length = 64
  # Tag tasks: bytes per word of the `chars` feature for a character CNN (0 = no feature;
  # the model's char_dim must then be 0 too).
  t.word_chars = 0
  # Tag tasks, training only (LSTM encoders): each word becomes <unk> with probability
  # unk_alpha / (unk_alpha + its training count) (frequency word dropout, Kiperwasser &
  # Goldberg 2016; 0 = off), and each word inside a gold entity (tag other than 'O') with
  # probability entity_unk_rate, so that <unk> looks as it will on a test set of new
  # entities. Both combine with model.word_dropout (batch field `unk_permille`).
  t.unk_alpha = 0.0
  t.entity_unk_rate = 0.0
  # Training examples longer than the lengths: 'truncate' or 'filter' (eval always truncates).
  t.length_handling = 'truncate'
  # sacreBLEU tokenizer for BLEU ('13a'; 'none' for pre-tokenized text such as Multi30k tok/).
  t.bleu_tokenize = '13a'
  # Decode metrics for seq2seq: 'bleu' (exact match, BLEU, chrF) or 'rouge' (adds ROUGE).
  t.decode_metrics = 'bleu'
  # Seed of the tokenizer's training-corpus sample.
  t.tokenizer_seed = 0
  # Root of the preprocessed-data cache (parallel / monolingual-line / TFDS training splits:
  # ArrayRecord shards in <root>/<key>, built once by experiments/preprocess.py or the first
  # train.py); '' = WORKDIR/preprocessed. Share one root between runs of the same data.
  t.preprocessed_dir = ''
  # Local folder for copies of remote (gs://…) preprocessed data: ArrayRecord shards are read
  # from local disk, so a gs:// cache is downloaded (or built and uploaded) here once.
  t.local_cache_dir = '~/.cache/lmjax'
  # Processes tokenizing while preprocessing (0 = one per CPU).
  t.preprocess_workers = 0

  t.source = ml_collections.ConfigDict()
  # 'parallel' | 'monolingual' | 'tsv' | 'labeled_lines' | 'conll' | 'summaries' | 'tfds'.
  t.source.type = 'parallel'
  # Type of the training files when it differs from `type` ('' = same), e.g. SST-2 trained
  # on GLUE's phrase TSV and evaluated on sentence-level `label text` lines.
  t.source.train_type = ''
  # Training files relative to data_dir (parallel: [source, target]; .gz allowed).
  t.source.train_files = []
  # Eval files (lm with lm_mode='stream': empty = last eval_fraction of the training text).
  t.source.eval_files = []
  # Test files, read only by `evaluate.py --split=test` (final numbers; never during training).
  t.source.test_files = []
  # Undecodable bytes: 'strict' (error naming file and line) or 'replace' (U+FFFD).
  t.source.encoding_errors = 'strict'
  # LM: 'line' (one example per line + EOS) or 'stream' (the text cut into fixed rows).
  t.source.lm_mode = 'line'
  # LM stream rows: False = each row starts from BOS (its first token is predicted without
  # context); True = overlapping windows as nanoGPT: a row's input is the T tokens before
  # each target (batch field 'decoder_inputs'), so every prediction has context. Plain batching.
  t.source.stream_context = False
  # LM stream without eval files: fraction of the training text held out for eval.
  t.source.eval_fraction = 0.1
  # Classify: label strings as they appear in the data (id = index); tag: tag set ([] = from train).
  t.source.labels = []
  # Classify: display names of the labels ([] = the label strings).
  t.source.label_names = []
  # TSV: text columns before the label column (1, or 2 for sentence pairs).
  t.source.num_text_columns = 1
  # TFDS dataset name, e.g. 'wmt14_translate/de-en' (type='tfds').
  t.source.tfds_name = ''
  # TFDS data directory ('' = the TFDS default, ~/tensorflow_datasets).
  t.source.tfds_data_dir = ''
  # TFDS training split.
  t.source.train_split = 'train'
  # TFDS eval split.
  t.source.eval_split = 'validation'
  # TFDS test split (evaluate.py --split=test).
  t.source.test_split = 'test'
  # TFDS feature with the source text (seq2seq, classify).
  t.source.input_key = 'inputs'
  # TFDS feature with the target text (seq2seq, lm).
  t.source.target_key = 'targets'
  # TFDS feature with the integer label (classify).
  t.source.label_key = 'label'
  # Keep at most this many training examples (0 = all).
  t.source.max_train_examples = 0
  # Keep at most this many eval examples (0 = all).
  t.source.max_eval_examples = 0

  t.tokenizer = ml_collections.ConfigDict()
  # 'sentencepiece' (trained on the training split), 'word' or 'char'; 'hf_bpe' is a
  # Hugging Face tokenizer.json (GPT-2) that experiments/import_hf.py writes, never trained.
  t.tokenizer.type = 'sentencepiece'
  # Vocabulary size incl. pad/EOS/unk (sentencepiece: target size; word/char: cap, 0 = none).
  t.tokenizer.vocab_size = 8000
  # SentencePiece model: 'unigram' or 'bpe'.
  t.tokenizer.model_type = 'unigram'
  # SentencePiece character coverage (1.0 for small alphabets).
  t.tokenizer.character_coverage = 1.0
  # SentencePiece training-corpus sample size (sentences; 0 = all).
  t.tokenizer.max_sentences = 1_000_000
  # SentencePiece: sentinel ids after the pieces (T5's `<extra_id_k>` = vocab − 1 − k; span
  # corruption needs them, and a run fine-tuned from a span-corruption run keeps them).
  t.tokenizer.extra_ids = 0
  # Word/char: minimum count to get an id (rarer tokens → <unk>).
  t.tokenizer.min_count = 1
  # Lowercase all text before tokenizing.
  t.tokenizer.lowercase = False
  # One vocabulary for source and target (seq2seq).
  t.tokenizer.shared = True
  # Word: pretrained word vectors (GloVe / word2vec / fastText text file, .gz allowed,
  # relative to data_dir) copied into the input embedding rows of a fresh run; '' = none.
  # Their width must equal config.model.emb_dim. The rows are copied as they are (the
  # Transformer's 'xavier' embeddings are then multiplied by sqrt(emb_dim), as its own are).
  t.tokenizer.vectors = ''
  # Word: also give ids to the vectors file's first N words (its most frequent), so that
  # words training never saw keep their pretrained row instead of becoming <unk>.
  t.tokenizer.vectors_vocab = 0

  t.batching = ml_collections.ConfigDict()
  # 'plain' (one example per row), 'pack' (several per row; Transformer only), 'bucket', or
  # 'windows' (lm_mode='stream': the stream re-cut at a new random offset every epoch).
  t.batching.mode = 'plain'
  # Bucket mode: allowed row lengths (the largest must hold every training example).
  t.batching.bucket_lengths = [16, 32, 64]
  # Bucket mode: token budget per global batch (rows × length ≤ max_tokens).
  t.batching.max_tokens = 4096
  # Bucket mode: examples read ahead and grouped into buckets at a time (memory bound).
  t.batching.window = 16384
  # Grain worker processes building training batches (0 = in the training process).
  # A checkpoint resumes exactly only with the worker count it was written with.
  t.batching.workers = 0
  return t
