"""Metric wrappers agree with the libraries they wrap and with hand-computed values."""

import math
import os

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from seqeval import metrics as seqeval_metrics

from lmjax import metrics

HYPS = ['the cat sat on the mat .', 'a dog runs in the Park', 'hello world']
REFS = ['the cat sat on a mat .', 'A dog is running in the park', 'hello there world']
WNUT = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'wnut17')


@pytest.mark.parametrize('tokenize,lowercase', [('13a', False), ('none', True)])
def test_bleu_matches_sacrebleu(tokenize, lowercase):
  score, signature = metrics.bleu(HYPS, REFS, tokenize=tokenize, lowercase=lowercase)
  direct = sacrebleu.corpus_bleu(HYPS, [REFS], tokenize=tokenize, lowercase=lowercase)
  assert isinstance(score, float) and score == pytest.approx(direct.score)
  assert f'tok:{tokenize}' in signature and ('case:lc' in signature) == lowercase
  assert metrics.bleu(REFS, REFS)[0] == pytest.approx(100.0)


def test_chrf_matches_sacrebleu():
  score, signature = metrics.chrf(HYPS, REFS)
  assert score == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
  assert signature.startswith('nrefs:1') and 'nc:6' in signature


def test_rouge_matches_rouge_score():
  scorer = rouge_scorer.RougeScorer(['rouge1', 'rouge2', 'rougeL'], use_stemmer=True)
  direct = [scorer.score(r, h) for h, r in zip(HYPS, REFS)]
  got = metrics.rouge(HYPS, REFS)
  for key in ('rouge1', 'rouge2', 'rougeL'):
    assert got[key] == pytest.approx(100 * np.mean([d[key].fmeasure for d in direct]))
  assert metrics.rouge(['a b c'], ['a b c'])['rouge2'] == pytest.approx(100.0)


def test_multi_reference_bleu_chrf_rouge():
  multi = [[r, h] if i == 1 else [r] for i, (h, r) in enumerate(zip(HYPS, REFS))]  # 2, 1, 1 refs
  streams = [REFS, [None, HYPS[1], None]]
  assert metrics.reference_streams(multi) == streams
  assert metrics.bleu(HYPS, multi)[0] == pytest.approx(sacrebleu.corpus_bleu(HYPS, streams).score)
  assert 'nrefs:var' in metrics.bleu(HYPS, multi)[1]
  assert metrics.chrf(HYPS, multi)[0] == pytest.approx(sacrebleu.corpus_chrf(HYPS, streams).score)
  assert metrics.bleu(HYPS, [[r] for r in REFS])[0] == pytest.approx(metrics.bleu(HYPS, REFS)[0])
  scorer = rouge_scorer.RougeScorer(['rouge1', 'rouge2', 'rougeL'], use_stemmer=True)
  got = metrics.rouge(HYPS, multi)
  for key in ('rouge1', 'rouge2', 'rougeL'):  # the second sentence's own text is a reference: 1.0
    single = [scorer.score(r, h)[key].fmeasure for h, r in zip(HYPS, REFS)]
    assert got[key] == pytest.approx(100 * (single[0] + 1.0 + single[2]) / 3)
  with pytest.raises(ValueError, match='segment 1 has no reference'):
    metrics.bleu(HYPS, [['a'], [], ['b']])
  with pytest.raises(ValueError, match='example 0 has no reference'):
    metrics.rouge(['a'], [[]])


def test_accuracy_macro_f1_exact_match_perplexity():
  labels = [0, 0, 1, 1, 2, 2]
  preds = [0, 1, 1, 1, 2, 0]
  assert metrics.accuracy(preds, labels) == pytest.approx(4 / 6)
  # class 0: P 1/2 R 1/2 F 1/2; class 1: P 2/3 R 1 F 4/5; class 2: P 1 R 1/2 F 2/3.
  assert metrics.macro_f1(preds, labels) == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
  assert metrics.macro_f1([3, 3], [0, 0]) == 0.0  # classes never right score 0
  assert metrics.exact_match(['a ', 'b', 'c'], ['a', 'b', 'd']) == pytest.approx(2 / 3)
  assert metrics.perplexity(230.0, 100) == pytest.approx(math.exp(2.3))
  assert metrics.perplexity(1e6, 1) == float('inf')


def test_entity_f1_matches_seqeval():
  gold = [['B-person', 'I-person', 'O', 'B-location'], ['O', 'B-group', 'I-group']]
  pred = [['B-person', 'I-person', 'O', 'B-group'], ['O', 'B-group', 'O']]
  got = metrics.entity_f1(gold, pred)
  assert got['precision'] == pytest.approx(100 * seqeval_metrics.precision_score(gold, pred))
  assert got['recall'] == pytest.approx(100 * seqeval_metrics.recall_score(gold, pred))
  assert got['f1'] == pytest.approx(100 / 3)  # 1 of 3 predicted, 1 of 3 gold entities
  with pytest.raises(ValueError, match='same shape'):
    metrics.entity_f1(gold, pred[:1])


def read_conll_tags(path):
  """Tag column of a `token TAB tag` file; blank lines separate sentences; any line ending."""
  sentences, current = [], []
  with open(path, encoding='utf-8', newline='') as f:
    for line in f:
      line = line.rstrip('\r\n')
      if not line.strip():
        if current:
          sentences.append(current)
        current = []
        continue
      current.append(line.split('\t')[-1].strip())
  if current:
    sentences.append(current)
  return sentences


@pytest.mark.parametrize('submission,f1,precision,recall', [
    ('uh_ritual', 41.86, 57.54, 32.90), ('sjtu_adapt.txt', 40.42, None, None)])
def test_entity_f1_reproduces_wnut17_shared_task(submission, f1, precision, recall):
  if not os.path.isdir(WNUT):
    pytest.skip(f'WNUT-17 fixtures not found at {WNUT}')
  gold = read_conll_tags(os.path.join(WNUT, 'emerging.test.annotated'))
  pred = read_conll_tags(os.path.join(WNUT, 'submissions', submission))
  got = metrics.entity_f1(gold, pred)
  assert round(got['f1'], 2) == f1
  if precision is not None:
    assert (round(got['precision'], 2), round(got['recall'], 2)) == (precision, recall)
