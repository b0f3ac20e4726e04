"""Evaluation metrics: thin wrappers over sacrebleu, rouge-score and seqeval.

Scores that papers report on a 0-100 scale (BLEU, chrF, ROUGE, entity P/R/F1) are
returned on that scale; accuracy, macro-F1 and exact match are fractions in [0, 1].
Every function returns plain Python floats.
"""

import math
from typing import Dict, List, Sequence, Tuple

import numpy as np
import sacrebleu


def reference_streams(references: Sequence) -> List[List]:
  """sacrebleu's reference streams from per-segment references.

  Args:
    references: one string per segment, or one list of strings per segment (lists may
      differ in length).

  Returns:
    R streams of len(references) entries each, R = the most references of any segment;
    a segment with fewer has None in the other streams (sacrebleu skips those).
  """
  if all(isinstance(r, str) for r in references):
    return [list(references)]
  per = [[r] if isinstance(r, str) else list(r) for r in references]
  for i, refs in enumerate(per):
    if not refs:
      raise ValueError(f'segment {i} has no reference')
  width = max(len(refs) for refs in per)
  return [[refs[j] if j < len(refs) else None for refs in per] for j in range(width)]


def bleu(hypotheses: Sequence[str], references: Sequence, *, tokenize: str = '13a',
         lowercase: bool = False) -> Tuple[float, str]:
  """Corpus BLEU (Papineni et al., 2002) computed by sacrebleu.

  Args:
    hypotheses: detokenised system outputs, one string per segment.
    references: one reference string per segment, or a list of references per segment.
    tokenize: sacrebleu tokeniser: '13a' (WMT default), 'intl', 'zh', 'none' for text
      already tokenised (e.g. the lowercased, tokenised Multi30k).
    lowercase: case-insensitive BLEU.

  Returns:
    (score in [0, 100], sacrebleu signature string to report with it).
  """
  metric = sacrebleu.metrics.BLEU(tokenize=tokenize, lowercase=lowercase)
  result = metric.corpus_score(list(hypotheses), reference_streams(references))
  return float(result.score), str(metric.get_signature())


def chrf(hypotheses: Sequence[str], references: Sequence, *,
         lowercase: bool = False) -> Tuple[float, str]:
  """Corpus chrF (Popović, 2015; character 6-grams, beta 2) computed by sacrebleu.

  Args:
    hypotheses: system outputs, one string per segment.
    references: one reference string per segment, or a list of references per segment.
    lowercase: case-insensitive chrF.

  Returns:
    (score in [0, 100], sacrebleu signature string).
  """
  metric = sacrebleu.metrics.CHRF(lowercase=lowercase)
  result = metric.corpus_score(list(hypotheses), reference_streams(references))
  return float(result.score), str(metric.get_signature())


def rouge(predictions: Sequence[str], references: Sequence, *,
          use_stemmer: bool = True) -> Dict[str, float]:
  """ROUGE-1/2/L F-measure (Lin, 2004) computed by Google's rouge-score package.

  Args:
    predictions: generated summaries, one string per example.
    references: one reference string per example, or one list of reference strings per
      example (multi-reference: each example scores its best-matching reference per
      measure, as rouge-score's `score_multi`).
    use_stemmer: Porter-stem tokens before matching (as in most summarisation papers).

  Returns:
    {'rouge1', 'rouge2', 'rougeL'}: mean F-measure over examples, in [0, 100].
  """
  if len(predictions) != len(references):
    raise ValueError(f'rouge got {len(predictions)} predictions and {len(references)} references')
  keys = ('rouge1', 'rouge2', 'rougeL')
  from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top  (pulls in nltk: ~1.5 s)
  scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=use_stemmer)
  totals = {k: 0.0 for k in keys}
  for i, (pred, ref) in enumerate(zip(predictions, references)):
    refs = [ref] if isinstance(ref, str) else list(ref)
    if not refs:
      raise ValueError(f'rouge: example {i} has no reference')
    for k in keys:
      totals[k] += max(scorer.score(r, pred)[k].fmeasure for r in refs)  # score(target, prediction)
  n = max(len(predictions), 1)
  return {k: 100.0 * v / n for k, v in totals.items()}


def accuracy(predictions, labels) -> float:
  """Fraction of positions where prediction equals label.

  Args:
    predictions: array-like of predicted labels.
    labels: array-like of gold labels, same shape.

  Returns:
    Accuracy in [0, 1].
  """
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  if predictions.shape != labels.shape:
    raise ValueError(f'accuracy got shapes {predictions.shape} and {labels.shape}')
  return float(np.mean(predictions == labels))


def macro_f1(predictions, labels) -> float:
  """Unweighted mean of per-class F1 over the classes present in labels or predictions.

  A class with no true positives gets F1 0 (as sklearn's f1_score(average='macro')
  with zero_division=0).

  Args:
    predictions: 1-D array-like of predicted class ids.
    labels: 1-D array-like of gold class ids.

  Returns:
    Macro-F1 in [0, 1].
  """
  predictions, labels = np.asarray(predictions).ravel(), np.asarray(labels).ravel()
  if predictions.shape != labels.shape:
    raise ValueError(f'macro_f1 got {predictions.size} predictions and {labels.size} labels')
  classes = np.union1d(predictions, labels)
  f1s = []
  for c in classes:
    tp = np.sum((predictions == c) & (labels == c))
    denom = np.sum(predictions == c) + np.sum(labels == c)  # 2TP + FP + FN
    f1s.append(2.0 * tp / denom if denom else 0.0)
  return float(np.mean(f1s)) if f1s else 0.0


def entity_f1(true_tags: List[List[str]], pred_tags: List[List[str]]) -> Dict[str, float]:
  """Entity-level precision/recall/F1 for BIO tagging (CoNLL scoring) via seqeval.

  An entity counts as correct only if its type and both boundaries match. Uses seqeval's
  default (conlleval-compatible) mode.

  Args:
    true_tags: gold tag strings ('B-person', 'I-person', 'O', ...), one list per sentence.
    pred_tags: predicted tag strings, same lengths.

  Returns:
    {'precision', 'recall', 'f1'} in [0, 100].
  """
  if len(true_tags) != len(pred_tags) or any(
      len(t) != len(p) for t, p in zip(true_tags, pred_tags)):
    raise ValueError('entity_f1 needs gold and predicted tags of the same shape '
                     '(same number of sentences and tokens per sentence)')
  from seqeval import metrics as seqeval_metrics  # pylint: disable=g-import-not-at-top  (imports sklearn)
  return {
      'precision': 100.0 * float(seqeval_metrics.precision_score(true_tags, pred_tags)),
      'recall': 100.0 * float(seqeval_metrics.recall_score(true_tags, pred_tags)),
      'f1': 100.0 * float(seqeval_metrics.f1_score(true_tags, pred_tags)),
  }


def exact_match(predictions: Sequence, references: Sequence, *, strip: bool = True) -> float:
  """Fraction of predictions identical to their reference.

  Args:
    predictions: strings (or any comparable items).
    references: references, same length.
    strip: strip surrounding whitespace from strings before comparing.

  Returns:
    Exact match in [0, 1].
  """
  if len(predictions) != len(references):
    raise ValueError(f'exact_match got {len(predictions)} predictions and '
                     f'{len(references)} references')
  norm = (lambda s: s.strip() if isinstance(s, str) else s) if strip else (lambda s: s)
  hits = sum(norm(p) == norm(r) for p, r in zip(predictions, references))
  return hits / max(len(predictions), 1)


def perplexity(total_nll: float, total_tokens: float) -> float:
  """Per-token perplexity exp(total NLL / total tokens).

  Args:
    total_nll: summed negative log-likelihood in nats over the evaluation set.
    total_tokens: number of scored tokens (padding excluded).

  Returns:
    Perplexity (inf on overflow).
  """
  if total_tokens <= 0:
    raise ValueError(f'perplexity needs total_tokens > 0, got {total_tokens}')
  try:
    return math.exp(float(total_nll) / float(total_tokens))
  except OverflowError:
    return float('inf')
