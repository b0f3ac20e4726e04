"""Pretraining tasks on unlabeled text: T5 span corruption (`text_span_corruption`) and
BERT masked LM (`text_masked_lm`).

The text is the training split only (never an eval or test split): lines of monolingual
files, the text of labelled files (their labels unused: in-domain text for a later
fine-tune), or both sides of parallel files (one shared vocabulary, so that a translation
fine-tune finds both languages covered). Documents are tokenized without EOS,
concatenated and cut into chunks of the raw length that `max_input_length` needs
(`span_corruption.random_spans_helper`); the last `source.eval_fraction` of the chunks is
held out as the eval split, corrupted once with fixed masks. Training chunks are
corrupted in the Grain stream, anew every epoch (`Task.train_transform`). Masked LM cuts
the stream (sentences separated by EOS, which is never masked) into rows of
`max_input_length` tokens, as RoBERTa's full-sentence rows; its [MASK] is the first id
after the SentencePiece pieces (config.task.tokenizer.extra_ids ≥ 1).
"""

from typing import List, Mapping, Optional, Tuple

from lmjax.data import masked_lm
from lmjax.data import pipeline
from lmjax.data import span_corruption
from lmjax.data import tokenizers as tok_lib
from lmjax.data.task_def import Task
from lmjax.data.text_common import build_tokenizers, limit, lower, read_split

# Seed of the eval split's fixed masks (the training masks come from config.data_seed).
EVAL_NOISE_SEED = 0x5EED


def _documents(cfg: Mapping) -> List[str]:
  """The training split's texts (of a labelled source: its text columns, labels unused)."""
  src = cfg['source']
  kind = src.get('train_type') or src['type']
  records = limit(read_split(cfg, 'train'), src['max_train_examples'])
  if kind == 'parallel':
    return [text for pair in records for text in pair]
  if kind == 'monolingual':
    return list(records)
  if kind == 'tfds':
    return [r[src['target_key']] for r in records]
  if kind in ('tsv', 'labeled_lines'):
    return [' '.join(texts) for texts, _ in records]
  field = 'train_type' if src.get('train_type') else 'type'
  raise ValueError(f"config.task.source.{field}={kind!r} cannot feed a pretraining task (use "
                   "'monolingual', 'parallel', 'tfds', or the text of 'tsv' / 'labeled_lines')")


def _tokenizer(cfg: Mapping, workdir: Optional[str], texts: List[str], what: str):
  """The run's shared SentencePiece tokenizer with its sentinel ids (built or cached)."""
  tok_cfg = cfg['tokenizer']
  if tok_cfg['type'] != 'sentencepiece' or not tok_cfg['shared']:
    raise ValueError(f"config.task.tokenizer: {what} needs one shared SentencePiece "
                     "vocabulary (type='sentencepiece', shared=True)")
  if tok_cfg.get('extra_ids', 0) < 1:
    raise ValueError(f"config.task.tokenizer.extra_ids={tok_cfg.get('extra_ids', 0)}: {what} "
                     'needs ids after the pieces (span corruption: T5\'s 100 sentinels; masked '
                     'LM: 1, its [MASK])')
  return build_tokenizers(cfg, workdir, {'inputs': texts}, cfg['tokenizer_seed'])['inputs']


def _hold_out(cfg: Mapping, chunks: List, length: int) -> Tuple[List, List]:
  """(training chunks, eval chunks): the last `source.eval_fraction` of them is held out."""
  eval_fraction = cfg['source']['eval_fraction']
  n_eval = max(1, int(round(len(chunks) * eval_fraction)))
  if len(chunks) < n_eval + 1:
    raise ValueError(f'the training text makes {len(chunks)} chunk(s) of {length} tokens: too '
                     'few to hold out config.task.source.eval_fraction='
                     f'{eval_fraction} for eval and train on the rest')
  held_out = chunks[-n_eval:]
  if cfg['source']['max_eval_examples']:
    held_out = held_out[:cfg['source']['max_eval_examples']]
  return chunks[:-n_eval], held_out


def text_span_corruption(cfg: Mapping, workdir: Optional[str]) -> Task:
  """T5 span-corruption pretraining (seq2seq: corrupted text → its noise spans).

  Args:
    cfg: config.task with `span_corruption` (noise_density, mean_noise_span_length) and
      a shared SentencePiece tokenizer with `extra_ids` sentinels.
    workdir: where the tokenizer is cached (None: do not cache).

  Returns:
    The Task; its vocabulary is the SentencePiece pieces + the sentinels.
  """
  noise = cfg['span_corruption']
  texts = [lower(cfg, t) for t in _documents(cfg)]
  tok = _tokenizer(cfg, workdir, texts, 'span corruption')
  raw, target_length = span_corruption.random_spans_helper(
      cfg['max_input_length'], noise['noise_density'], noise['mean_noise_span_length'])
  chunks = pipeline.chunk_documents((tok.encode(t) for t in texts), raw)
  train, held_out = _hold_out(cfg, chunks, raw)
  noiser = span_corruption.SpanCorruption(tok.vocab_size, noise['noise_density'],
                                          noise['mean_noise_span_length'])
  eval_ex = [noiser(pipeline.example_rng(EVAL_NOISE_SEED, i), {'tokens': c})
             for i, c in enumerate(held_out)]
  return Task(name=cfg['name'], kind='seq2seq', tokenizers={'inputs': tok, 'targets': tok},
              lengths={'inputs': cfg['max_input_length'], 'targets': target_length},
              train_examples=[{'tokens': c} for c in train], eval_examples=eval_ex,
              eval_sources=[tok.decode(ex['inputs']) for ex in eval_ex],
              eval_references=[tok.decode(ex['targets']) for ex in eval_ex],
              bleu_tokenize='none', batching=dict(cfg['batching']), train_transform=noiser)


def text_masked_lm(cfg: Mapping, workdir: Optional[str]) -> Task:
  """BERT masked-LM pretraining of an encoder (head='mlm'): kind 'mlm', targets at the
  selected positions only.

  Args:
    cfg: config.task with `masked_lm` (select_rate, mask_fraction, random_fraction) and a
      shared SentencePiece tokenizer with extra_ids ≥ 1.
    workdir: where the tokenizer is cached (None: do not cache).

  Returns:
    The Task; [MASK] is the first id after the pieces.
  """
  noise = cfg['masked_lm']
  texts = [lower(cfg, t) for t in _documents(cfg)]
  tok = _tokenizer(cfg, workdir, texts, 'masked LM')
  length = cfg['max_input_length']
  chunks = pipeline.chunk_documents(
      (tok.encode(t) + [tok_lib.EOS_ID] for t in texts), length)
  train, held_out = _hold_out(cfg, chunks, length)
  noiser = masked_lm.MaskedLM(masked_lm.mask_id(tok.pieces), noise['select_rate'],
                              noise['mask_fraction'], noise['random_fraction'])
  eval_ex = [noiser(pipeline.example_rng(EVAL_NOISE_SEED, i), {'tokens': c})
             for i, c in enumerate(held_out)]
  return Task(name=cfg['name'], kind='mlm', tokenizers={'inputs': tok},
              lengths={'inputs': length, 'targets': length},
              train_examples=[{'tokens': c} for c in train], eval_examples=eval_ex,
              eval_sources=[tok.decode(ex['inputs']) for ex in eval_ex],
              eval_references=[tok.decode(ex['targets']) for ex in eval_ex],
              batching=dict(cfg['batching']), train_transform=noiser)
