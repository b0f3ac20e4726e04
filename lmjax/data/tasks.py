"""Tasks: a data source + tokenizers + features + how predictions are scored.

`build_task(config.task, workdir)` looks the task up in `TASKS` (an explicit
registry) and returns a `Task`.
"""

import dataclasses
import os
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np
import sacrebleu

from lmjax.data import pipeline
from lmjax.data import synthetic
from lmjax.data import tokenizers as tok_lib


@dataclasses.dataclass
class Task:
  """Everything the trainer needs to know about the data.

  Attributes:
    name: registry name.
    kind: 'seq2seq' | 'lm' | 'classify' | 'tag'.
    tokenizers: feature name ('inputs' / 'targets') → tokenizer.
    lengths: static length per sequence feature.
    train_examples: tokenized training examples.
    eval_examples: tokenized eval examples (in order).
    eval_sources: eval source strings (for samples).
    eval_references: eval reference strings, aligned with eval_examples.
    bleu_tokenize: sacreBLEU tokenizer for BLEU/chrF ('13a', 'none', …).
    label_names: classify: class names (id = index); tag: tag names with index 0 =
      padding ('<pad>'), real tags from 1. None for seq2seq/lm.
  """
  name: str
  kind: str
  tokenizers: Dict[str, tok_lib.VocabTokenizer]
  lengths: Dict[str, int]
  train_examples: List[pipeline.Example]
  eval_examples: List[pipeline.Example]
  eval_sources: List[str]
  eval_references: List[str]
  bleu_tokenize: str = '13a'
  label_names: Optional[List[str]] = None

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
      exact_match (%), bleu and chrf (sacreBLEU corpus scores).
    """
    refs = self.eval_references[:len(predictions)]
    exact = float(np.mean([p == r for p, r in zip(predictions, refs)])) * 100.0
    bleu = sacrebleu.corpus_bleu(predictions, [refs], tokenize=self.bleu_tokenize)
    chrf = sacrebleu.corpus_chrf(predictions, [refs])
    return {'exact_match': exact, 'bleu': float(bleu.score), 'chrf': float(chrf.score)}


def encode_seq2seq(pairs, src_tok, tgt_tok, max_input_length, max_target_length):
  """Tokenizes (source, target) pairs; targets end with EOS; over-long ones are truncated."""
  out = []
  for src, tgt in pairs:
    inputs = src_tok.encode(src)[:max_input_length]
    targets = (tgt_tok.encode(tgt)[:max_target_length - 1]) + [tok_lib.EOS_ID]
    out.append({'inputs': np.asarray(inputs, np.int32), 'targets': np.asarray(targets, np.int32)})
  return out


def load_or_build_tokenizer(workdir: Optional[str], name: str,
                            build: Callable[[], tok_lib.VocabTokenizer]) -> tok_lib.VocabTokenizer:
  """Reuses WORKDIR/tokenizers/<name>.json when present (resume), else builds and saves it."""
  if workdir is None:
    return build()
  path = os.path.join(workdir, 'tokenizers', f'{name}.json')
  if os.path.exists(path):
    return tok_lib.VocabTokenizer.load(path)
  tokenizer = build()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tokenizer.save(path)
  return tokenizer


def synthetic_dates(cfg: Mapping, workdir: Optional[str]) -> Task:
  """The built-in dates → ISO translation task (see lmjax.data.synthetic)."""
  train_pairs = synthetic.dates_pairs('train', cfg['num_train'], cfg['data_seed'])
  eval_pairs = synthetic.dates_pairs('eval', cfg['num_eval'], cfg['data_seed'])
  vocab = load_or_build_tokenizer(
      workdir, 'vocab', lambda: tok_lib.VocabTokenizer(synthetic.vocabulary(), 'word'))
  expected = tok_lib.VocabTokenizer(synthetic.vocabulary(), 'word')
  if vocab.tokens != expected.tokens:
    raise ValueError(f'{workdir}/tokenizers/vocab.json does not match the synthetic task '
                     'vocabulary: use a fresh --workdir')
  lengths = {'inputs': cfg['max_input_length'], 'targets': cfg['max_target_length']}
  enc = lambda p: encode_seq2seq(p, vocab, vocab, lengths['inputs'], lengths['targets'])
  return Task(name='synthetic_dates', kind='seq2seq', tokenizers={'inputs': vocab, 'targets': vocab},
              lengths=lengths, train_examples=enc(train_pairs), eval_examples=enc(eval_pairs),
              eval_sources=[s for s, _ in eval_pairs], eval_references=[t for _, t in eval_pairs],
              bleu_tokenize='none')


# Task name → builder(config.task, workdir). Every task is listed here.
TASKS: Dict[str, Callable[[Mapping, Optional[str]], Task]] = {
    'synthetic_dates': synthetic_dates,
}


def build_task(task_config: Mapping, workdir: Optional[str]) -> Task:
  """Builds the task named by `task_config.name`.

  Args:
    task_config: `config.task`.
    workdir: where tokenizers are cached (None: do not cache).

  Returns:
    The Task.
  """
  name = task_config['name']
  if name not in TASKS:
    raise ValueError(f'config.task.name={name!r} is not a task; valid: {sorted(TASKS)}')
  return TASKS[name](task_config, workdir)
