"""Which parameters a warm start loads, and from where (t5x's assignment map, big_vision's
`dont_load`), checked strictly.

`config.train.init_rules` is a list of [model regex, checkpoint path] pairs over
'/'-joined parameter paths ('encoder/layer_0/mlp/wi/kernel'). Each model parameter takes
the first rule whose regex matches its whole path: the checkpoint path (with `\\1`-style
groups of the match) names the source parameter it is loaded from, and None (JSON null)
declares it new (it keeps its fresh initialisation, e.g. a new classifier head).
`config.train.init_skip` lists regexes of checkpoint parameters that are deliberately not
used (the pretraining head). Everything must be accounted for: a model parameter no
rule covers, a checkpoint parameter neither loaded nor skipped, a missing source, a shape
mismatch, and a rule or skip pattern that matches nothing are each a line of one error.
The default, [['(.*)', '\\1']] with no skips, loads every parameter by its own name and
fails on any difference.
"""

import dataclasses
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import flax

DEFAULT_RULES = (('(.*)', r'\1'),)
MAX_LISTED = 30  # problems listed in the error (the rest counted)


@dataclasses.dataclass
class Assignment:
  """Where each parameter of a warm-started model comes from.

  Attributes:
    loaded: model path → checkpoint path it is loaded from.
    new: model paths that keep their fresh initialisation.
    skipped: checkpoint paths deliberately not used.
  """
  loaded: Dict[str, str]
  new: List[str]
  skipped: List[str]

  def report(self) -> Dict[str, Any]:
    """JSON-ready summary (written to WORKDIR/init_report.json)."""
    return {'loaded': dict(sorted(self.loaded.items())), 'new': sorted(self.new),
            'skipped': sorted(self.skipped)}

  def line(self, source: str, step: int) -> str:
    """One line for the log."""
    out = f'Warm start: {len(self.loaded)} parameters of {source} step {step}'
    if self.new:
      out += f'; {len(self.new)} new ({", ".join(sorted(self.new)[:3])}{", …" if len(self.new) > 3 else ""})'
    if self.skipped:
      out += f'; {len(self.skipped)} of its parameters skipped'
    return out


def flat_paths(tree) -> Dict[str, Any]:
  """'/'-joined path → leaf of a (possibly boxed) parameter tree."""
  return flax.traverse_util.flatten_dict(flax.core.meta.unbox(tree), sep='/')


def _compile(patterns: Sequence[str], field: str) -> List[re.Pattern]:
  out = []
  for i, pattern in enumerate(patterns):
    try:
      out.append(re.compile(pattern))
    except re.error as e:
      raise ValueError(f'{field}[{i}]={pattern!r} is not a regular expression ({e})') from e
  return out


def parse_rules(rules: Optional[Sequence[Any]]) -> List[Tuple[str, Optional[str]]]:
  """config.train.init_rules → [(model regex, checkpoint path template or None)].

  Raises:
    ValueError: an entry that is not a [regex, path-or-null] pair.
  """
  if not rules:
    return list(DEFAULT_RULES)
  out = []
  for i, rule in enumerate(rules):
    if (not isinstance(rule, (list, tuple)) or len(rule) != 2 or not isinstance(rule[0], str)
        or not (rule[1] is None or isinstance(rule[1], str))):
      raise ValueError(f'config.train.init_rules[{i}]={rule!r}: expected [model regex, '
                       'checkpoint path] or [model regex, null] (a new parameter)')
    out.append((rule[0], rule[1]))
  return out


def assign(model_shapes: Mapping[str, Tuple[int, ...]],
           source_shapes: Mapping[str, Tuple[int, ...]], rules: Optional[Sequence[Any]],
           skip: Sequence[str], source: str) -> Assignment:
  """Matches the model's parameters to the checkpoint's, checking everything.

  Args:
    model_shapes: model path → shape.
    source_shapes: checkpoint path → shape.
    rules: config.train.init_rules (empty: every parameter by its own name).
    skip: config.train.init_skip.
    source: the checkpoint, for the message ('config.train.init_from=W (step N)').

  Returns:
    The assignment.

  Raises:
    ValueError: one line per problem (see the module docstring).
  """
  rules = parse_rules(rules)
  compiled = _compile([r for r, _ in rules], 'config.train.init_rules')
  skips = _compile(list(skip), 'config.train.init_skip')
  problems, loaded, new, used_rules = [], {}, [], set()
  claimed = set()  # checkpoint paths some rule names (loaded, or reported as a bad fit)
  for path in sorted(model_shapes):
    shape = tuple(model_shapes[path])
    for i, regex in enumerate(compiled):
      match = regex.fullmatch(path)
      if match is None:
        continue
      used_rules.add(i)
      template = rules[i][1]
      if template is None:
        new.append(path)
        break
      try:
        origin = match.expand(template)
      except (re.error, IndexError) as e:
        problems.append(f'config.train.init_rules[{i}]={list(rules[i])!r}: cannot build the '
                        f'checkpoint path of {path} ({e})')
        break
      if origin not in source_shapes:
        problems.append(f'model parameter {path} {shape}: config.train.init_rules[{i}] loads '
                        f'{origin}, which the checkpoint does not have')
      elif tuple(source_shapes[origin]) != shape:
        claimed.add(origin)
        problems.append(f'model parameter {path} {shape}: the checkpoint has {origin} with '
                        f'shape {tuple(source_shapes[origin])}')
      else:
        loaded[path] = origin
      break
    else:
      problems.append(f'model parameter {path} {shape} is neither loaded nor declared new by '
                      'config.train.init_rules (add [regex, null] for a new parameter)')
  for i, rule in enumerate(rules):
    if i not in used_rules:
      problems.append(f'config.train.init_rules[{i}]={list(rule)!r} matches no model parameter')
  used, skipped, used_skips = set(loaded.values()) | claimed, [], set()
  for path in sorted(source_shapes):
    if path in used:
      continue
    hits = [j for j, regex in enumerate(skips) if regex.fullmatch(path)]
    if hits:
      used_skips.update(hits)
      skipped.append(path)
    else:
      problems.append(f'checkpoint parameter {path} {tuple(source_shapes[path])} is loaded by no '
                      'model parameter and skipped by no config.train.init_skip pattern')
  for j, pattern in enumerate(skip):
    if j not in used_skips:
      problems.append(f'config.train.init_skip[{j}]={pattern!r} matches no unused checkpoint '
                      'parameter')
  if problems:
    shown = problems[:MAX_LISTED] + ([f'… and {len(problems) - MAX_LISTED} more']
                                     if len(problems) > MAX_LISTED else [])
    raise ValueError(f'{source}: its parameters do not match this model ({len(problems)} '
                     'problem(s); the model config must match that run\'s, or '
                     'config.train.init_rules / init_skip must say what to load):\n  '
                     + '\n  '.join(shown))
  return Assignment(loaded, new, skipped)
