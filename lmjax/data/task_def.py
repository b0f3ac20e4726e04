"""The Task record: everything the trainer needs to know about the data, and how
predictions are scored. Built by the registry in `lmjax.data.tasks`."""

import dataclasses
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from lmjax import metrics as metrics_lib
from lmjax.data import lm_stream
from lmjax.data import pipeline
from lmjax.data import records
from lmjax.data import stream
from lmjax.data import tokenizers as tok_lib


# config.task.batching.mode: `Task.train_iterator` batches 'plain', 'pack' and 'bucket'
# with `lmjax.data.stream`, 'windows' with `lmjax.data.lm_stream`.
BATCHING_MODES = ('plain', 'pack', 'bucket', 'windows')


@dataclasses.dataclass
class Task:
  """Everything the trainer needs to know about the data.

  Attributes:
    name: registry name.
    kind: 'seq2seq' | 'lm' | 'classify' | 'tag' | 'mlm' (masked-LM pretraining).
    tokenizers: feature name ('inputs' / 'targets') → tokenizer.
    lengths: static length per sequence feature.
    train_examples: tokenized training examples (None when `train_source` holds them).
    eval_examples: tokenized eval examples (in order).
    eval_sources: eval source strings (for samples).
    eval_references: eval reference strings, aligned with eval_examples.
    bleu_tokenize: sacreBLEU tokenizer for BLEU/chrF ('13a', 'none', …).
    label_names: classify: class names (id = index); tag: tag names with index 0 =
      padding ('<pad>'), real tags from 1. None for seq2seq/lm.
    batching: training batching options (`config.task.batching`: mode 'plain' | 'pack'
      | 'bucket', bucket_lengths, max_tokens); None = plain.
    decode_metrics: 'bleu' (exact match, BLEU, chrF) or 'rouge' (adds ROUGE-1/2/L).
    eval_annotations: optional extra human references per eval example (AESLC's `@annN`
      subjects); decode metrics are then also scored against them, as `ann_*`.
    encode_input: classify/tag: one line of raw text → the model's input features
      (untruncated), as the training examples are built; used by the decode CLI.
    train_source: the preprocessed training split on disk (lmjax.data.preprocess), read
      at random by the Grain pipeline; None = `train_examples` in memory.
    train_transform: (generator, example) → training example, applied by the Grain
      pipeline with a generator drawn from (data seed, stream index) (pretraining noise:
      `span_corruption.SpanCorruption`, `masked_lm.MaskedLM`); None = the examples as
      they are.
  """
  name: str
  kind: str
  tokenizers: Dict[str, tok_lib.VocabTokenizer]
  lengths: Dict[str, int]
  train_examples: Optional[List[pipeline.Example]]
  eval_examples: List[pipeline.Example]
  eval_sources: List[str]
  eval_references: List[str]
  bleu_tokenize: str = '13a'
  label_names: Optional[List[str]] = None
  batching: Optional[Dict[str, Any]] = None
  decode_metrics: str = 'bleu'
  encode_input: Optional[Callable[[str], pipeline.Example]] = None
  eval_annotations: Optional[List[List[str]]] = None
  train_source: Optional[records.RecordSource] = None
  train_transform: Optional[Callable[[np.random.Generator, pipeline.Example],
                                     pipeline.Example]] = None

  def num_train_examples(self) -> int:
    """Size of the training split."""
    return len(self.train_source if self.train_source is not None else self.train_examples)

  def train_example(self, i: int = 0) -> pipeline.Example:
    """The i-th training example as the model sees it (e.g. to build a dummy batch of the
    right shapes): with `train_transform`, noised with the generator of stream index i."""
    if self.train_source is not None:
      example = self.train_source.example(i)
    else:
      example = self.train_examples[i]
    if self.train_transform is not None:
      example = self.train_transform(pipeline.example_rng(0, i), example)
    return example

  def train_iterator(self, global_batch_size: int, seed: int, process_index: int = 0,
                     process_count: int = 1):
    """The resumable training-batch iterator for `self.batching` (config.task.batching.mode).

    Args:
      global_batch_size: rows per step (plain, pack), or the row multiple of every
        bucket (bucket mode: rows come from the token budget).
      seed: shuffling seed.
      process_index: this host's index.
      process_count: number of hosts.

    Returns:
      An iterator of host-local batches with get_state/set_state: Grain's
      (`lmjax.data.stream`) for 'plain', 'pack' and 'bucket'; `lm_stream`'s for 'windows'.
    """
    batching = dict(self.batching or {'mode': 'plain'})
    if batching['mode'] == 'windows':  # a token stream re-cut each epoch: see lm_stream
      if self.train_transform is not None:
        raise ValueError(f"config.task.batching.mode='windows' cannot apply task {self.name}'s "
                         "per-example noise: use 'plain', 'pack' or 'bucket'")
      return lm_stream.WindowIterator.from_rows(self.train_examples, global_batch_size,
                                                self.lengths['targets'], seed,
                                                process_index=process_index,
                                                process_count=process_count)
    kwargs = dict(global_batch_size=global_batch_size, lengths=self.lengths, seed=seed,
                  process_index=process_index, process_count=process_count, batching=batching,
                  workers=batching.get('workers', 0), transform=self.train_transform)
    if self.train_source is not None:
      return stream.from_records(self.train_source, **kwargs)
    return stream.from_examples(self.train_examples, **kwargs)

  def model_sizes(self) -> Dict[str, int]:
    """Data-dependent model sizes passed to `lmjax.models.build_model`."""
    sizes = {}
    if 'targets' in self.tokenizers:
      sizes['target_vocab_size'] = self.tokenizers['targets'].vocab_size
    sizes['vocab_size'] = self.tokenizers.get('inputs', self.tokenizers.get('targets')).vocab_size
    if self.label_names is not None:
      sizes['num_classes'] = len(self.label_names)
    return sizes

  def detokenize(self, ids) -> str:
    """Target ids → text."""
    return self.tokenizers['targets'].decode(ids)

  def score_predictions(self, predictions: List[str]) -> Dict[str, float]:
    """Decode-based metrics on the eval split.

    Args:
      predictions: detokenized model outputs aligned with `eval_references`.

    Returns:
      exact_match (%), bleu and chrf (sacreBLEU corpus scores), rouge1/2/L when
      decode_metrics='rouge'; with eval_annotations, the same again against those
      references (multi-reference BLEU/chrF, best-reference ROUGE), prefixed 'ann_'.
    """
    out = self._score(predictions, self.eval_references[:len(predictions)])
    if self.eval_annotations is not None:
      ann = self._score(predictions, self.eval_annotations[:len(predictions)])
      out.update({f'ann_{k}': v for k, v in ann.items()})
    return out

  def _score(self, predictions: List[str], refs: List) -> Dict[str, float]:
    exact = float(np.mean([p in ([r] if isinstance(r, str) else r)
                           for p, r in zip(predictions, refs)])) * 100.0
    out = {'exact_match': exact,
           'bleu': metrics_lib.bleu(predictions, refs, tokenize=self.bleu_tokenize)[0],
           'chrf': metrics_lib.chrf(predictions, refs)[0]}
    if self.decode_metrics == 'rouge':
      out.update(metrics_lib.rouge(predictions, refs))
    return out
