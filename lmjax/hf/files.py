"""Reading and writing a Hugging Face model directory: config.json and safetensors.

Only `safetensors` and numpy are needed (no torch): a directory holds `model.safetensors`,
or shards listed by `model.safetensors.index.json` (its `weight_map`). bfloat16 tensors
are read as `ml_dtypes.bfloat16` arrays and kept, or cast to float32 on request.
"""

import json
from typing import Dict, Optional

import ml_dtypes
import numpy as np

from lmjax import fileio

CONFIG = 'config.json'
SINGLE = 'model.safetensors'
INDEX = 'model.safetensors.index.json'


class HFError(ValueError):
  """A Hugging Face directory or tensor that cannot be converted (one line per problem)."""


def read_config(hf_dir: str) -> Dict:
  """The model's config.json as a dict.

  Raises:
    HFError: no readable config.json in `hf_dir`.
  """
  path = fileio.join(hf_dir, CONFIG)
  try:
    return json.loads(fileio.read_text(path))
  except (OSError, ValueError) as e:
    raise HFError(f'{path}: expected the config.json of a Hugging Face model ({e})') from e


def tensor_files(hf_dir: str) -> Dict[str, str]:
  """{tensor name: safetensors file path} of the directory (sharded or single file).

  Raises:
    HFError: neither model.safetensors nor model.safetensors.index.json.
  """
  index = fileio.join(hf_dir, INDEX)
  if fileio.exists(index):
    weight_map = json.loads(fileio.read_text(index))['weight_map']
    return {name: fileio.join(hf_dir, f) for name, f in weight_map.items()}
  single = fileio.join(hf_dir, SINGLE)
  if not fileio.exists(single):
    raise HFError(f'{hf_dir}: no {SINGLE} or {INDEX} (only safetensors checkpoints are read; '
                  'save the model with save_pretrained(..., safe_serialization=True))')
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  with fileio.local_copy(single) as local, safe_open(local, framework='np') as f:
    return {name: single for name in f.keys()}


def read_tensors(hf_dir: str, dtype: Optional[str] = None) -> Dict[str, np.ndarray]:
  """Every tensor of the checkpoint as a numpy array.

  Args:
    hf_dir: the model directory.
    dtype: None keeps each tensor's dtype (bfloat16 as ml_dtypes.bfloat16); 'float32'
      casts floating tensors.

  Returns:
    {tensor name: array}.
  """
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  by_file: Dict[str, list] = {}
  for name, path in tensor_files(hf_dir).items():
    by_file.setdefault(path, []).append(name)
  out = {}
  for path, names in by_file.items():
    with fileio.local_copy(path) as local, safe_open(local, framework='np') as f:
      for name in names:
        out[name] = f.get_tensor(name)
  if dtype == 'float32':
    out = {k: v.astype(np.float32) if _is_float(v) else v for k, v in out.items()}
  return out


def _is_float(x: np.ndarray) -> bool:
  return np.issubdtype(x.dtype, np.floating) or x.dtype == ml_dtypes.bfloat16


def write_tensors(tensors: Dict[str, np.ndarray], out_dir: str) -> None:
  """Writes `tensors` as one model.safetensors (metadata format 'pt', as transformers
  writes and expects), contiguous copies of each array."""
  from safetensors.numpy import save  # pylint: disable=g-import-not-at-top
  fileio.makedirs(out_dir)
  data = save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata={'format': 'pt'})
  fileio.write_bytes(fileio.join(out_dir, SINGLE), data)


def write_config(config: Dict, out_dir: str) -> None:
  fileio.makedirs(out_dir)
  fileio.write_text(fileio.join(out_dir, CONFIG), json.dumps(config, indent=2, sort_keys=True))
