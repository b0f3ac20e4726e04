"""One table per model family maps every Hugging Face tensor to an lmjax parameter and back.

A `Table` lists `Entry`s (lmjax parameter path, HF tensor name, and the array transforms
both ways) and the HF names that are tied copies of another tensor (`aliases`: present in
some files, dropped by `save_pretrained` in others). A fused HF tensor (GPT-2's `c_attn`:
query|key|value along its last axis) has one entry per equal part (`Entry.part`): split on
import, concatenated on export.
`to_lmjax` checks the whole checkpoint before returning anything: every tensor used,
every parameter assigned, every shape right, or one `HFError` with one line per problem.
A table may also name the HF tensors that are buffers, not parameters (`Table.buffers`:
skipped), whole tensors that no parameter holds because they cannot change the output
(`Table.dropped`: BERT's key biases; checked and dropped on import, zeros on export), and
a prefix that files of the family's base model leave out (`Table.prefix`: GPT2Model's
`wte.weight` is GPT2LMHeadModel's `transformer.wte.weight`).
"""

import dataclasses
import re
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from lmjax.hf.files import HFError

Transform = Callable[[np.ndarray], np.ndarray]


def same(x: np.ndarray) -> np.ndarray:
  return x


def transpose(x: np.ndarray) -> np.ndarray:
  """torch Linear (out, in) ↔ flax Dense kernel (in, out)."""
  return x.T


def reshape(shape_fn: Callable[[np.ndarray], Tuple[int, ...]]) -> Transform:
  """A transform reshaping an array to `shape_fn(array)` (ValueError when it does not fit)."""
  def fn(x):
    return np.reshape(x, shape_fn(x))
  return fn


def split_heads_in(num_heads: int) -> Tuple[Transform, Transform]:
  """torch (H*Dh, D) query/key/value weight ↔ flax DenseGeneral kernel (D, H, Dh)."""
  def fwd(w):
    return w.T.reshape(w.shape[1], num_heads, w.shape[0] // num_heads)
  def back(k):
    return k.reshape(k.shape[0], -1).T
  return fwd, back


def split_heads_out(num_heads: int) -> Tuple[Transform, Transform]:
  """torch (D, H*Dh) output weight ↔ flax DenseGeneral kernel (H, Dh, D)."""
  def fwd(w):
    return w.T.reshape(num_heads, w.shape[1] // num_heads, w.shape[0])
  def back(k):
    return k.reshape(-1, k.shape[-1]).T
  return fwd, back


@dataclasses.dataclass(frozen=True)
class Entry:
  """One lmjax parameter ↔ one HF tensor, or one part of it.

  Attributes:
    path: lmjax parameter path, '/'-joined ('encoder/layer_0/self_attention/query/kernel');
      None for a part that no parameter holds because it cannot change the model's output
      (a key bias, which softmax cancels): dropped on import, zeros on export.
    hf: HF tensor name ('encoder.block.0.layer.0.SelfAttention.q.weight').
    to_lmjax: HF array (the part) → lmjax array.
    to_hf: lmjax array → HF array (the part).
    part: (k, n): the entry holds the k-th of n equal chunks of the tensor's last axis;
      (0, 1) is the whole tensor. The entries of one tensor name every k once.
  """
  path: Optional[str]
  hf: str
  to_lmjax: Transform = same
  to_hf: Transform = same
  part: Tuple[int, int] = (0, 1)


@dataclasses.dataclass
class Table:
  """A family's parameter table for one model configuration.

  Attributes:
    entries: one per lmjax parameter.
    aliases: {HF name: the HF name it is a tied copy of}; read only to check it is equal.
    buffers: regexes (whole names, prefix included) of HF tensors that hold no parameter
      (e.g. GPT-2's causal masks `transformer.h.{i}.attn.bias`); skipped on import,
      not written on export.
    prefix: the start of every entry's HF name that some files of the family leave out
      (their base model's tensors); a name without it is read as if it had it, when the
      table knows that name or it is a buffer.
    dropped: {HF name: the HF name of an entry's tensor of the same shape}: parameters of
      the HF model that no lmjax parameter holds because they cannot change its output (a
      key bias, which softmax cancels). On import each must be present with that shape
      and is then dropped; on export it is written as zeros of that shape.
  """
  entries: List[Entry]
  aliases: Dict[str, str] = dataclasses.field(default_factory=dict)
  buffers: Tuple[str, ...] = ()
  prefix: str = ''
  dropped: Dict[str, str] = dataclasses.field(default_factory=dict)


def canonical_tensors(table: Table, tensors: Mapping[str, np.ndarray]
                      ) -> Dict[str, np.ndarray]:
  """The checkpoint's tensors under the table's names, buffers dropped.

  Args:
    table: the family's table.
    tensors: {HF name: array}, with or without `table.prefix`.

  Returns:
    {HF name: array}: a name without the prefix gets it when the table knows the prefixed
    name or it names a buffer (others keep their name, to be reported as unmatched, as does
    a name that the file also holds prefixed); then every buffer is left out.
  """
  known = {e.hf for e in table.entries} | set(table.aliases) | set(table.dropped)
  is_buffer = lambda name: any(re.fullmatch(p, name) for p in table.buffers)
  out = {}
  for name, value in tensors.items():
    full = table.prefix + name
    if (table.prefix and not name.startswith(table.prefix) and full not in tensors
        and (full in known or is_buffer(full))):
      name = full
    out[name] = value
  return {name: value for name, value in out.items() if not is_buffer(name)}


def _by_tensor(table: Table) -> Dict[str, List[Entry]]:
  """{HF name: its entries in part order}, checking that the parts of each tensor tile it.

  Raises:
    ValueError: a table whose parts of one tensor are not (0, n) … (n - 1, n) (a bug in the
      family module, not in the checkpoint).
  """
  groups: Dict[str, List[Entry]] = {}
  for entry in table.entries:
    groups.setdefault(entry.hf, []).append(entry)
  for name, group in groups.items():
    group.sort(key=lambda e: e.part[0])
    n = group[0].part[1]
    if [e.part for e in group] != [(k, n) for k in range(n)] or all(e.path is None for e in group):
      raise ValueError(f'table entries of {name} have parts {[e.part for e in group]}; '
                       f'expected (0, n) … (n - 1, n), at least one with a parameter path')
  for name, like in table.dropped.items():
    if name in groups:
      raise ValueError(f'dropped tensor {name} also has table entries')
    if like not in groups:
      raise ValueError(f'dropped tensor {name} takes its shape from {like}, which has no '
                       'table entries')
  return groups


def _split(value: np.ndarray, n: int) -> List[np.ndarray]:
  """n equal chunks of the last axis (ValueError when it does not divide)."""
  if n == 1:
    return [value]
  if value.ndim == 0 or value.shape[-1] % n:
    raise ValueError(f'its last axis does not split into {n} equal parts')
  return np.split(value, n, axis=-1)


def to_lmjax(table: Table, tensors: Mapping[str, np.ndarray],
             expected: Mapping[str, Sequence[int]], source: str = 'checkpoint'
             ) -> Dict[str, np.ndarray]:
  """Maps a checkpoint's tensors onto lmjax parameters, checking everything first.

  Args:
    table: the family's table for this configuration.
    tensors: {HF name: array} (with or without `table.prefix`; buffers are skipped:
      `canonical_tensors`).
    expected: {lmjax path: shape} of the model's parameters (from `jax.eval_shape`).
    source: the checkpoint's name, for messages.

  Returns:
    {lmjax path: array}.

  Raises:
    HFError: listing every unmatched checkpoint tensor, missing tensor, model parameter
      no entry assigns, tied copy that differs, and shape mismatch (tensor, both shapes);
      one line per tensor.
  """
  problems, out = [], {}
  tensors = canonical_tensors(table, tensors)
  groups = _by_tensor(table)
  used = set(groups) | set(table.aliases) | set(table.dropped)
  for name in sorted(set(tensors) - used):
    problems.append(f'{source}: tensor {name} {tuple(tensors[name].shape)} matches no '
                    'parameter of the model')
  by_path = {e.path: e for e in table.entries if e.path is not None}
  for path in sorted(set(expected) - set(by_path)):
    problems.append(f'model parameter {path} {tuple(expected[path])} is assigned by no tensor '
                    f'of {source}')
  for name, group in groups.items():
    entries = [e for e in group if e.path is not None]
    absent = [e.path for e in entries if e.path not in expected]
    if absent:
      problems.append(f'{source}: tensor {name} maps to {", ".join(absent)}, which the model '
                      'does not have')
      continue
    if name not in tensors:
      wanted = ', '.join(f'{e.path} {tuple(expected[e.path])}' for e in entries)
      plural = 's' if len(entries) > 1 else ''
      problems.append(f'{source}: tensor {name} is missing (model parameter{plural} {wanted})')
      continue
    value = tensors[name]
    try:
      parts = _split(value, group[0].part[1])
    except ValueError as e:
      wanted = ', '.join(f'{e.path} {tuple(expected[e.path])}' for e in entries)
      problems.append(f'{source}: tensor {name} has shape {tuple(value.shape)}, which does '
                      f'not fit model parameters {wanted} ({e})')
      continue
    for entry in entries:
      part = parts[entry.part[0]]
      try:
        converted = entry.to_lmjax(part)
      except ValueError as e:
        problems.append(f'{source}: tensor {name} has shape {tuple(value.shape)}, which does '
                        f'not fit model parameter {entry.path} {tuple(expected[entry.path])} ({e})')
        break
      if tuple(converted.shape) != tuple(expected[entry.path]):
        problems.append(f'{source}: tensor {name} has shape {tuple(value.shape)} '
                        f'(→ {tuple(converted.shape)}), model parameter {entry.path} has '
                        f'{tuple(expected[entry.path])}')
        break
      out[entry.path] = converted
  for name, like in table.dropped.items():
    if name not in tensors:
      problems.append(f'{source}: tensor {name} is missing (no model parameter holds it, but '
                      f'a checkpoint of this family has it, shaped like {like})')
    elif like in tensors and tensors[name].shape != tensors[like].shape:
      problems.append(f'{source}: tensor {name} has shape {tuple(tensors[name].shape)}; '
                      f'expected {tuple(tensors[like].shape)}, as {like} (no model parameter '
                      'holds it)')
  for alias, target in table.aliases.items():
    if alias in tensors and target in tensors and not np.array_equal(tensors[alias],
                                                                      tensors[target]):
      problems.append(f'{source}: tensor {alias} should be a tied copy of {target} but differs')
  if problems:
    raise HFError('\n'.join(problems))
  return out


def to_hf(table: Table, params: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """lmjax parameters {path: array} → HF tensors {name: array} (aliases are not written).

  The parts of a fused tensor are concatenated along its last axis; a part no parameter
  holds is written as zeros shaped like its siblings, a dropped tensor as zeros shaped like
  the tensor it names.

  Raises:
    HFError: a family transform that finds the parameters inexpressible in HF form.
  """
  out = {}
  for name, group in _by_tensor(table).items():
    parts = [None if e.path is None else np.asarray(e.to_hf(np.asarray(params[e.path])))
             for e in group]
    like = next(p for p in parts if p is not None)
    parts = [np.zeros_like(like) if p is None else p for p in parts]
    out[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)
  for name, like in table.dropped.items():
    out[name] = np.zeros_like(out[like])
  return out
