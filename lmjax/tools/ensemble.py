"""Ensembles of classifiers and taggers: several runs of one config predict together.

    python experiments/evaluate.py --workdir=W0 --ensemble=W1,W2 --checkpoint=last --split=test

The members (W0 and the `--ensemble` runs, typically other seeds) must share the model
config, the label set and the tokenizers, so that one batch feeds them all. Each member
loads the same `--checkpoint` (or `--average_last` mean) of its own run.

How the members combine:
- classifiers and argmax taggers average each member's log-probabilities (log-softmax of
  its logits) and take the argmax;
- CRF taggers average the members' emissions and transition / start / end tables and run
  Viterbi on the mean: the tag path with the highest mean of the members' sequence
  log-likelihoods (each member's log-partition is a constant of the sentence).

The ensemble's report holds the metrics computed from predictions (accuracy and macro F1,
or token accuracy and entity P/R/F1); loss and perplexity belong to single models.
"""

import dataclasses
import functools
from typing import Any, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp

from lmjax import fileio
from lmjax.objectives import predictions
from lmjax.tools.workdir import ToolError

KINDS = ('classify', 'tag')


def mean_scores(members: Sequence[Any], batch, *, objective):
  """The members' mean scores for `batch`.

  Args:
    members: parameter trees of one model.
    batch: an eval batch.
    objective: the run's objective (`scores`: what each member predicts from).

  Returns:
    CRF tagger: (emissions (B, S, C), transitions (C, C), start (C,), end (C,)), each the
    members' mean. Otherwise: ((B, C) or (B, S, C) mean log-probabilities,).
  """
  total = None
  for params in members:
    parts = objective.scores(params, batch)
    total = parts if total is None else tuple(a + b for a, b in zip(total, parts))
  return tuple(x / float(len(members)) for x in total)


def predict_step(members: Sequence[Any], batch, *, objective, score_bias=None) -> jnp.ndarray:
  """The objective's `predict_labels` for an ensemble: (B,) classes or (B, S) tags.

  Args:
    members: parameter trees of one model.
    batch: an eval batch.
    objective: the run's objective.
    score_bias: optional (C,) added to the mean scores (emissions for a CRF).

  Returns:
    (B,) int32 classes, or (B, S) int32 tags (0 on padding).
  """
  return objective.predict_from_scores(mean_scores(members, batch, objective=objective), batch,
                                       score_bias)


def _tokenizer_files(workdir: str) -> Dict[str, bytes]:
  folder = fileio.join(workdir, 'tokenizers')
  return {name: fileio.read_bytes(fileio.join(folder, name)) for name in fileio.listdir(folder)}


def check_member(run, member) -> None:
  """Raises a ToolError unless `member` (a Run) can predict with `run`'s batches.

  Args:
    run: the primary `lmjax.tools.inference.Run` (--workdir).
    member: another Run (an --ensemble workdir).
  """
  where = f'--ensemble member {member.workdir}'
  if run.task.kind not in KINDS:
    raise ToolError(f'--ensemble: only {" and ".join(KINDS)} runs can be ensembled; '
                    f'{run.workdir} is a {run.task.kind!r} run')
  ours, theirs = run.config.model.to_dict(), member.config.model.to_dict()
  if ours != theirs:
    fields = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    detail = ', '.join(f'{k}: {theirs.get(k)!r} vs {ours.get(k)!r}' for k in fields[:4])
    raise ToolError(f'{where}: config.model differs from {run.workdir} ({detail}); members '
                    'must be runs of one model config')
  if list(member.task.label_names or []) != list(run.task.label_names or []):
    raise ToolError(f'{where}: labels {member.task.label_names} differ from {run.workdir}\'s '
                    f'{run.task.label_names}')
  if _tokenizer_files(member.workdir) != _tokenizer_files(run.workdir):
    raise ToolError(f'{where}: its tokenizers/ differ from {run.workdir}/tokenizers (another '
                    'vocabulary); members must be trained on the same data and tokenizer config')
  if member.task.lengths != run.task.lengths:
    raise ToolError(f'{where}: feature lengths {member.task.lengths} differ from '
                    f'{run.task.lengths} (config.task.max_input_length / word_chars)')


def evaluate(run, members: Sequence[Tuple[str, Any, Any]]) -> Dict[str, Any]:
  """The prediction metrics of an ensemble on `run`'s split.

  Args:
    run: the primary Run (its task, split, mesh, config.eval.outside_bias).
    members: (workdir, params placed with `run.param_shardings`, CheckpointInfo) per
      member, the primary first.

  Returns:
    The report: workdir, split, num_examples, metrics, checkpoint (the primary's),
    ensemble (each member's workdir and checkpoint label), signatures (none).
  """
  task = run.task
  ev = run.evaluator()
  bias = predictions.outside_bias(task, run.config.eval.outside_bias)
  params = tuple(p for _, p, _ in members)
  step = jax.jit(functools.partial(predict_step, objective=ev.objective, score_bias=bias),
                 in_shardings=(tuple(run.param_shardings for _ in params), run.batch_sharding),
                 out_shardings=run.batch_sharding)
  metrics = ev.predictor.score(ev.predict(params, task.eval_examples, step), with_accuracy=True)
  info = members[0][2]
  return {'workdir': fileio.resolve(run.workdir), 'split': run.split,
          'num_examples': len(task.eval_examples), 'metrics': metrics,
          'checkpoint': dict(dataclasses.asdict(info), label=info.label),
          'ensemble': [{'workdir': fileio.resolve(w), 'checkpoint': i.label}
                       for w, _, i in members],
          'signatures': {}}
