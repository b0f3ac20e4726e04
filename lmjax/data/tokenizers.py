"""Tokenizers. Ids 0 = padding, 1 = EOS, 2 = unknown; real tokens from 3.

Every tokenizer has the same interface: `encode(text) -> ids` (no EOS), `decode(ids)`
(stops at EOS, skips padding), `vocab_size`, `save(path)` and `load(path)`. Files are
JSON with a 'type' field (`TYPES`); `load(path)` reads any of them. 'hf_bpe' files hold
a Hugging Face tokenizer.json that experiments/import_hf.py bridged (GPT-2's byte-level
BPE); they need the `tokenizers` package, imported only when one is read.
"""

import base64
import collections
import json
from typing import Any, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from lmjax import fileio

PAD, EOS, UNK = '<pad>', '</s>', '<unk>'
SPECIALS = (PAD, EOS, UNK)
EOS_ID, UNK_ID = 1, 2
# config.task.tokenizer.type values; 'hf_bpe' is only imported (`HFBPETokenizer`), never trained.
TYPES = ('sentencepiece', 'word', 'char', 'hf_bpe')


def _write_json_atomic(path: str, data: Mapping[str, Any]) -> None:
  fileio.write_text(path, json.dumps(data, ensure_ascii=False))


class VocabTokenizer:
  """Word- or character-level tokenizer over a fixed vocabulary.

  Attributes:
    level: 'word' (split on whitespace) or 'char'.
    tokens: id → token (specials first).
  """

  def __init__(self, tokens: Sequence[str], level: str = 'word'):
    if level not in ('word', 'char'):
      raise ValueError(f"tokenizer level must be 'word' or 'char', got {level!r}")
    if tuple(tokens[:3]) != SPECIALS:
      tokens = list(SPECIALS) + [t for t in tokens if t not in SPECIALS]
    self.level = level
    self.tokens = list(tokens)
    self._ids = {t: i for i, t in enumerate(self.tokens)}

  @classmethod
  def build(cls, texts: Iterable[str], level: str = 'word', min_count: int = 1,
            max_size: int = 0) -> 'VocabTokenizer':
    """Vocabulary from training texts: tokens seen ≥ min_count times, most frequent first.

    Args:
      texts: training sentences.
      level: 'word' or 'char'.
      min_count: minimum frequency to keep a token (others map to <unk>).
      max_size: cap on vocabulary size including specials (0 = no cap).

    Returns:
      The tokenizer.
    """
    counts = collections.Counter()
    for t in texts:
      counts.update(t.split() if level == 'word' else list(t))
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if max_size:
      kept = kept[:max_size - len(SPECIALS)]
    return cls(list(SPECIALS) + kept, level)

  @property
  def vocab_size(self) -> int:
    return len(self.tokens)

  def encode(self, text: str) -> List[int]:
    """Text → ids (no EOS)."""
    pieces = text.split() if self.level == 'word' else list(text)
    return [self._ids.get(p, UNK_ID) for p in pieces]

  def decode(self, ids: Iterable[int]) -> str:
    """Ids → text, stopping at EOS and skipping padding."""
    out = []
    for i in ids:
      i = int(i)
      if i == EOS_ID:
        break
      if i > EOS_ID:
        out.append(self.tokens[i] if i < len(self.tokens) else UNK)
    return (' ' if self.level == 'word' else '').join(out)

  def save(self, path: str, options: Optional[Mapping[str, Any]] = None) -> None:
    """Writes the vocabulary as JSON, atomically (write to a temp file, then rename).

    Args:
      path: output file.
      options: the settings it was built with (checked against the config on resume).
    """
    _write_json_atomic(path, {'type': 'vocab', 'level': self.level, 'tokens': self.tokens,
                              'options': dict(options or {})})

  @classmethod
  def load(cls, path: str) -> 'VocabTokenizer':
    """Reads a vocabulary written by `save`."""
    tokenizer = load(path)
    if not isinstance(tokenizer, cls):
      raise ValueError(f'tokenizer file {path} is not a word/char vocabulary')
    return tokenizer


class SentencePieceTokenizer:
  """SentencePiece (unigram or BPE) subwords with ids 0 = pad, 1 = EOS, 2 = unk.

  With `extra_ids` sentinels after the pieces (T5's layout, as seqio and
  `transformers.T5Tokenizer(extra_ids=N)`): `<extra_id_k>` = vocab_size − 1 − k.

  Attributes:
    model_proto: the serialized SentencePiece model.
    extra_ids: sentinel ids after the pieces (span corruption).
  """

  def __init__(self, model_proto: bytes, extra_ids: int = 0):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    self.model_proto = model_proto
    if extra_ids < 0:
      raise ValueError(f'SentencePiece extra_ids must be ≥ 0, got {extra_ids}')
    self.extra_ids = int(extra_ids)
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    if (self._sp.pad_id(), self._sp.eos_id(), self._sp.unk_id()) != (0, EOS_ID, UNK_ID):
      raise ValueError('SentencePiece model must have pad_id=0, eos_id=1, unk_id=2')

  @classmethod
  def train(cls, texts: Sequence[str], vocab_size: int, model_type: str = 'unigram',
            character_coverage: float = 1.0, max_sentences: int = 1_000_000, seed: int = 0,
            max_sentence_length: int = 16384) -> 'SentencePieceTokenizer':
    """Trains a model on `texts` (a deterministic sample of at most `max_sentences`).

    Args:
      texts: training sentences.
      vocab_size: vocabulary size including pad/EOS/unk (a soft limit on tiny corpora).
      model_type: 'unigram' or 'bpe'.
      character_coverage: fraction of characters covered by the vocabulary (1.0 for
        small alphabets, ~0.9995 for CJK).
      max_sentences: sampled training-corpus size (0 = all).
      seed: sampling seed.
      max_sentence_length: longer sentences (bytes) are skipped by the trainer.

    Returns:
      The tokenizer.
    """
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    if model_type not in ('unigram', 'bpe'):
      raise ValueError(f"sentencepiece model_type must be 'unigram' or 'bpe', got {model_type!r}")
    texts = [t for t in texts if t.strip()]
    if max_sentences and len(texts) > max_sentences:
      idx = np.sort(np.random.default_rng(seed).choice(len(texts), max_sentences, replace=False))
      texts = [texts[i] for i in idx]
    model = __import__('io').BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
        model_type=model_type, character_coverage=character_coverage, pad_id=0, eos_id=EOS_ID,
        unk_id=UNK_ID, bos_id=-1, pad_piece=PAD, eos_piece=EOS, unk_piece=UNK,
        hard_vocab_limit=False, input_sentence_size=0, num_threads=1,
        max_sentence_length=max_sentence_length, normalization_rule_name='identity',
        minloglevel=2)
    return cls(model.getvalue())

  @property
  def pieces(self) -> int:
    """The SentencePiece model's own ids (sentinels come after them)."""
    return self._sp.get_piece_size()

  @property
  def vocab_size(self) -> int:
    return self.pieces + self.extra_ids

  def encode(self, text: str) -> List[int]:
    """Text → ids (no EOS)."""
    return self._sp.encode(text)

  def decode(self, ids: Iterable[int]) -> str:
    """Ids → text, stopping at EOS and skipping padding; sentinels as `<extra_id_k>`."""
    parts, run = [], []
    for i in ids:
      i = int(i)
      if i == EOS_ID:
        break
      if i <= EOS_ID:
        continue
      if self.pieces <= i < self.vocab_size:
        parts.extend([self._sp.decode(run), f'<extra_id_{self.vocab_size - 1 - i}>'])
        run = []
      else:
        run.append(i if i < self.pieces else UNK_ID)
    parts.append(self._sp.decode(run))
    return ' '.join(p for p in parts if p)

  def save(self, path: str, options: Optional[Mapping[str, Any]] = None) -> None:
    """Writes the model (base64 inside JSON), atomically."""
    data = {'type': 'sentencepiece', 'options': dict(options or {}),
            'model': base64.b64encode(self.model_proto).decode('ascii')}
    if self.extra_ids:  # (absent: files written before sentinels existed read the same)
      data['extra_ids'] = self.extra_ids
    _write_json_atomic(path, data)

  @classmethod
  def load(cls, path: str) -> 'SentencePieceTokenizer':
    return load(path)


def ids_from_hf(hf_ids, hf_vocab: int, offset: int = 3) -> np.ndarray:
  """Ids of a vocabulary whose last id ends the text (GPT-2's <|endoftext|>) → lmjax ids.

  Args:
    hf_ids: the vocabulary's ids, any shape.
    hf_vocab: its size V (the end token is V − 1).
    offset: lmjax ids reserved before its first one (padding/BOS, EOS, unknown).

  Returns:
    int32 lmjax ids, the shape of `hf_ids`: V − 1 → EOS (1), i → i + offset.
  """
  hf_ids = np.asarray(hf_ids)
  return np.where(hf_ids == hf_vocab - 1, EOS_ID, hf_ids + offset).astype(np.int32)


def ids_to_hf(ids, hf_vocab: int, offset: int = 3) -> np.ndarray:
  """lmjax ids → the vocabulary's ids (the inverse of `ids_from_hf` on its range).

  Args:
    ids: lmjax ids, any shape.
    hf_vocab: the vocabulary's size V.
    offset: as for `ids_from_hf`.

  Returns:
    int64 ids (torch's index dtype), the shape of `ids`: every id below `offset` → the end
    token V − 1, i → i − offset.
  """
  ids = np.asarray(ids)
  return np.where(ids < offset, hf_vocab - 1, ids - offset).astype(np.int64)


HF_BPE_NEEDS = ("a 'hf_bpe' tokenizer (a Hugging Face tokenizer.json that "
                "experiments/import_hf.py bridged) needs the `tokenizers` package: "
                "pip install 'lmjax[hf]' (or pip install tokenizers)")


class HFBPETokenizer:
  """A Hugging Face `tokenizers` tokenizer (tokenizer.json: GPT-2's byte-level BPE) with
  lmjax's ids.

  Its last id ends the text (GPT-2's <|endoftext|>, its BOS and EOS) and becomes EOS (1);
  its id i becomes i + offset (`ids_from_hf`). lmjax's ids below `offset` (padding, which is
  also the BOS the decoder starts from, EOS and unknown) are special: `decode` stops at EOS
  and drops the others. Text is encoded and decoded by the `tokenizers` library exactly as
  the checkpoint's tokenizer does (no special tokens added, no clean-up of spaces).

  Attributes:
    tokenizer_json: the tokenizer.json text.
    offset: lmjax ids before the tokenizer's first one.
    hf_vocab: the tokenizer's size V, added tokens included.
  """

  def __init__(self, tokenizer_json: str, offset: int = 3):
    try:
      from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ImportError(HF_BPE_NEEDS) from None
    if offset < 3:
      raise ValueError(f'hf_bpe offset must be >= 3 (padding, EOS and unknown come first), '
                       f'got {offset}')
    self.tokenizer_json = tokenizer_json
    self.offset = int(offset)
    try:
      self._tok = Tokenizer.from_str(tokenizer_json)
    except Exception as e:  # pylint: disable=broad-except  (the Rust parser's own errors)
      raise ValueError(f'not a Hugging Face tokenizer.json ({e})') from None
    self.hf_vocab = self._tok.get_vocab_size(with_added_tokens=True)

  @property
  def vocab_size(self) -> int:
    return self.hf_vocab - 1 + self.offset

  def encode(self, text: str) -> List[int]:
    """Text → ids (no EOS)."""
    hf_ids = self._tok.encode(text, add_special_tokens=False).ids
    return ids_from_hf(hf_ids, self.hf_vocab, self.offset).tolist()

  def decode(self, ids: Iterable[int]) -> str:
    """Ids → text, stopping at EOS and dropping the other special ids."""
    kept = []
    for i in ids:
      i = int(i)
      if i == EOS_ID:
        break
      if self.offset <= i < self.vocab_size:
        kept.append(i)
    return self._tok.decode(ids_to_hf(kept, self.hf_vocab, self.offset).tolist(),
                            skip_special_tokens=False)

  def save(self, path: str, options: Optional[Mapping[str, Any]] = None) -> None:
    """Writes the tokenizer.json text and the offset inside JSON, atomically."""
    _write_json_atomic(path, {'type': 'hf_bpe', 'options': dict(options or {}),
                              'offset': self.offset, 'tokenizer_json': self.tokenizer_json})

  @classmethod
  def load(cls, path: str) -> 'HFBPETokenizer':
    return load(path)


def load(path: str):
  """Reads any tokenizer written by a `save` method.

  Returns:
    The tokenizer; its build options are in `tokenizer.options`.
  """
  try:
    data = json.loads(fileio.read_text(path))
    kind = data.get('type', 'vocab')
    if kind == 'sentencepiece':
      tokenizer = SentencePieceTokenizer(base64.b64decode(data['model']),
                                         int(data.get('extra_ids', 0)))
    elif kind == 'hf_bpe':
      tokenizer = HFBPETokenizer(data['tokenizer_json'], int(data['offset']))
    else:
      tokenizer = VocabTokenizer(data['tokens'], data['level'])
  except ImportError as e:  # a missing package, not a bad file: deleting it would not help
    raise ValueError(f'tokenizer file {path}: {e}') from None
  except (OSError, ValueError, KeyError, RuntimeError) as e:
    raise ValueError(f'tokenizer file {path} is unreadable ({e}); delete it to rebuild it') from e
  tokenizer.options = data.get('options', {})
  return tokenizer


def build(texts: Sequence[str], options: Mapping[str, Any], seed: int = 0):
  """Builds a tokenizer from training texts.

  Args:
    texts: training sentences (or documents).
    options: 'type' ('sentencepiece' | 'word' | 'char'; 'hf_bpe' is only imported) and its
      settings: vocab_size, model_type, character_coverage, max_sentences, extra_ids
      (sentencepiece: sentinels after the pieces, 0 if absent); min_count, vocab_size
      (0 = no cap) (word/char).
    seed: sampling seed for sentencepiece.

  Returns:
    The tokenizer.
  """
  kind = options['type']
  if kind == 'sentencepiece':
    trained = SentencePieceTokenizer.train(
        texts, options['vocab_size'], options['model_type'], options['character_coverage'],
        options['max_sentences'], seed)
    extra_ids = int(options.get('extra_ids', 0))
    return SentencePieceTokenizer(trained.model_proto, extra_ids) if extra_ids else trained
  if kind in ('word', 'char'):
    return VocabTokenizer.build(texts, kind, options['min_count'], options['vocab_size'])
  if kind == 'hf_bpe':
    raise ValueError("config.task.tokenizer.type='hf_bpe' is a Hugging Face tokenizer that "
                     'experiments/import_hf.py writes into the workdir (tokenizers/vocab.json); '
                     'it is not trained from text: fine-tune from the imported workdir '
                     '(configs/finetune.py:WORKDIR), or choose another tokenizer type')
  raise ValueError(f'config.task.tokenizer.type must be one of {TYPES}, got {kind!r}')


# Byte ids of `word_bytes`: UTF-8 byte + 1, so that 0 stays padding.
NUM_BYTE_IDS = 257


def word_bytes(words: Sequence[str], width: int) -> np.ndarray:
  """Character features of words: their UTF-8 bytes, for a character CNN.

  Bytes need no vocabulary, keep case and cover every script and emoji; a word
  longer than `width` bytes keeps its first `width`.

  Args:
    words: the tokens of one sentence.
    width: bytes per word W.

  Returns:
    (len(words), W) int32: byte + 1 (1..256), 0 after the word's end.
  """
  out = np.zeros((len(words), width), np.int32)  # (S, W)
  for i, word in enumerate(words):
    raw = np.frombuffer(word.encode('utf-8')[:width], np.uint8)
    out[i, :len(raw)] = raw.astype(np.int32) + 1
  return out
