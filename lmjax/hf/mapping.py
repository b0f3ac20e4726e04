"""One table per model family maps every Hugging Face tensor to an lmjax parameter and back.

A `Table` lists `Entry`s (lmjax parameter path, HF tensor name, and the array transforms
both ways) and the HF names that are tied copies of another tensor (`aliases`: present in
some files, dropped by `save_pretrained` in others).
`to_lmjax` checks the whole checkpoint before returning anything: every tensor used,
every parameter assigned, every shape right, or one `HFError` with one line per problem.
"""

import dataclasses
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from lmjax.hf.files import HFError

Transform = Callable[[np.ndarray], np.ndarray]


def same(x: np.ndarray) -> np.ndarray:
  return x


def transpose(x: np.ndarray) -> np.ndarray:
  """torch Linear (out, in) ↔ flax Dense kernel (in, out)."""
  return x.T


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
  """One lmjax parameter ↔ one HF tensor.

  Attributes:
    path: lmjax parameter path, '/'-joined ('encoder/layer_0/self_attention/query/kernel').
    hf: HF tensor name ('encoder.block.0.layer.0.SelfAttention.q.weight').
    to_lmjax: HF array → lmjax array.
    to_hf: lmjax array → HF array.
  """
  path: str
  hf: str
  to_lmjax: Transform = same
  to_hf: Transform = same


@dataclasses.dataclass
class Table:
  """A family's parameter table for one model configuration.

  Attributes:
    entries: one per lmjax parameter.
    aliases: {HF name: the HF name it is a tied copy of}; read only to check it is equal.
  """
  entries: List[Entry]
  aliases: Dict[str, str] = dataclasses.field(default_factory=dict)


def to_lmjax(table: Table, tensors: Mapping[str, np.ndarray],
             expected: Mapping[str, Sequence[int]], source: str = 'checkpoint'
             ) -> Dict[str, np.ndarray]:
  """Maps a checkpoint's tensors onto lmjax parameters, checking everything first.

  Args:
    table: the family's table for this configuration.
    tensors: {HF name: array}.
    expected: {lmjax path: shape} of the model's parameters (from `jax.eval_shape`).
    source: the checkpoint's name, for messages.

  Returns:
    {lmjax path: array}.

  Raises:
    HFError: listing every unmatched checkpoint tensor, missing tensor, model parameter
      no entry assigns, tied copy that differs, and shape mismatch (tensor, both shapes).
  """
  problems, out = [], {}
  used = {e.hf for e in table.entries} | set(table.aliases)
  for name in sorted(set(tensors) - used):
    problems.append(f'{source}: tensor {name} {tuple(tensors[name].shape)} matches no '
                    'parameter of the model')
  by_path = {e.path: e for e in table.entries}
  for path in sorted(set(expected) - set(by_path)):
    problems.append(f'model parameter {path} {tuple(expected[path])} is assigned by no tensor '
                    f'of {source}')
  for entry in table.entries:
    if entry.path not in expected:
      problems.append(f'{source}: tensor {entry.hf} maps to {entry.path}, which the model '
                      'does not have')
      continue
    if entry.hf not in tensors:
      problems.append(f'{source}: tensor {entry.hf} is missing (model parameter {entry.path} '
                      f'{tuple(expected[entry.path])})')
      continue
    value = tensors[entry.hf]
    try:
      converted = entry.to_lmjax(value)
    except ValueError as e:
      problems.append(f'{source}: tensor {entry.hf} has shape {tuple(value.shape)}, which does '
                      f'not fit model parameter {entry.path} {tuple(expected[entry.path])} ({e})')
      continue
    if tuple(converted.shape) != tuple(expected[entry.path]):
      problems.append(f'{source}: tensor {entry.hf} has shape {tuple(value.shape)} '
                      f'(→ {tuple(converted.shape)}), model parameter {entry.path} has '
                      f'{tuple(expected[entry.path])}')
      continue
    out[entry.path] = converted
  for alias, target in table.aliases.items():
    if alias in tensors and target in tensors and not np.array_equal(tensors[alias],
                                                                      tensors[target]):
      problems.append(f'{source}: tensor {alias} should be a tied copy of {target} but differs')
  if problems:
    raise HFError('\n'.join(problems))
  return out


def to_hf(table: Table, params: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """lmjax parameters {path: array} → HF tensors {name: array} (aliases are not written)."""
  return {e.hf: np.asarray(e.to_hf(np.asarray(params[e.path]))) for e in table.entries}
