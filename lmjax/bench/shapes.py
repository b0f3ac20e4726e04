"""Named benchmark shapes, the lmjax configs that realise them, and random batches.

The configs come from the normal config path (configs/default.py or configs/ptb_lstm.py
`get_config()`, then fields overridden), so a benchmark measures what users run.
"""

import dataclasses
from typing import Any, Dict, Mapping, Optional

import ml_collections
import numpy as np

from lmjax.config import configlib


@dataclasses.dataclass(frozen=True)
class TransformerShape:
  """A Transformer encoder-decoder train shape (shared vocabulary, no padding).

  Attributes:
    name: table name.
    vocab_size: shared source/target vocabulary V.
    emb_dim: model width D (= qkv_dim).
    num_heads: attention heads H.
    num_encoder_layers: encoder depth.
    num_decoder_layers: decoder depth.
    mlp_dim: feed-forward width F.
    batch_size: sentences per step B.
    source_length: source tokens per sentence S.
    target_length: target tokens per sentence T.
    dropout_rate: residual/embedding dropout.
    label_smoothing: cross-entropy label smoothing.
  """
  name: str
  vocab_size: int
  emb_dim: int
  num_heads: int
  num_encoder_layers: int
  num_decoder_layers: int
  mlp_dim: int
  batch_size: int
  source_length: int = 64
  target_length: int = 64
  dropout_rate: float = 0.1
  label_smoothing: float = 0.1


@dataclasses.dataclass(frozen=True)
class LSTMShape:
  """A word-level LSTM LM train shape (PTB-style, no padding).

  Attributes:
    name: table name.
    vocab_size: vocabulary V.
    emb_dim: embedding width E.
    hidden_dim: LSTM width H.
    num_layers: LSTM depth.
    batch_size: rows per step B.
    length: tokens per row T (the BPTT window).
  """
  name: str
  vocab_size: int
  emb_dim: int
  hidden_dim: int
  num_layers: int
  batch_size: int
  length: int


@dataclasses.dataclass(frozen=True)
class DecodeShape:
  """A decode shape: which train shape's model, and the decode sizes.

  Attributes:
    name: table name.
    model: key of TRANSFORMER_SHAPES whose model is decoded (random params).
    batch_size: sentences per call B.
    beam_size: beam width K.
    max_length: output tokens per sentence L (forced: EOS is unreachable).
    source_length: source tokens per sentence S.
  """
  name: str
  model: str
  batch_size: int
  beam_size: int
  max_length: int
  source_length: int


# Issue #7 shapes; 'tiny' ones are for the smoke test.
TRANSFORMER_SHAPES: Dict[str, TransformerShape] = {
    'small': TransformerShape('small', 8000, 256, 4, 3, 3, 1024, batch_size=32),
    'base': TransformerShape('base', 8000, 512, 8, 6, 6, 2048, batch_size=16),
    # The base model at an accelerator's batch: 256 rows of 256 + 256 tokens (MFU goal).
    'large': TransformerShape('large', 32000, 512, 8, 6, 6, 2048, batch_size=256,
                              source_length=256, target_length=256),
    # configs/multi30k_transformer.py (Wu et al.'s Transformer-tiny): 64 rows of 64 tokens.
    'multi30k': TransformerShape('multi30k', 8000, 128, 4, 4, 4, 256, batch_size=64,
                                 dropout_rate=0.3),
    'tiny': TransformerShape('tiny', 64, 32, 2, 1, 1, 64, batch_size=4, source_length=8,
                             target_length=8),
}
LSTM_SHAPES: Dict[str, LSTMShape] = {
    # Zaremba et al. (2014) / TF tutorial "small": 2×200, batch 20, 35 steps, 10k words.
    'ptb': LSTMShape('ptb', 10_000, 200, 200, 2, batch_size=20, length=35),
    'tiny': LSTMShape('tiny', 64, 16, 16, 2, batch_size=4, length=6),
}
DECODE_SHAPES: Dict[str, DecodeShape] = {
    'small': DecodeShape('small', 'small', batch_size=16, beam_size=4, max_length=64,
                         source_length=64),
    'tiny': DecodeShape('tiny', 'tiny', batch_size=2, beam_size=2, max_length=5, source_length=8),
}


def precision_suffix(precision: str) -> str:
  """'' for float32 rows, ' bf16' for bfloat16 ones (row names: 'lmjax small bf16')."""
  return ' bf16' if precision == 'bfloat16' else ''


def lookup(table: Mapping[str, Any], name: str, flag: str):
  """table[name], or a ValueError naming the flag and the valid names."""
  if name not in table:
    raise ValueError(f'{flag}={name!r} is not a shape; valid: {sorted(table)}')
  return table[name]


def _coerce(text: str, current: Any) -> Any:
  """Parses `text` to the type of the field's current value."""
  if isinstance(current, bool):
    if text.lower() not in ('true', 'false', '1', '0'):
      raise ValueError(f'expected true/false, got {text!r}')
    return text.lower() in ('true', '1')
  if isinstance(current, int):
    return int(text)
  if isinstance(current, float):
    return float(text)
  return text


def parse_overrides(spec: str, prefix: str = '') -> Dict[str, str]:
  """'a=1,b.c=x' → {prefix + 'a': '1', prefix + 'b.c': 'x'} (values still strings).

  Args:
    spec: comma-separated key=value pairs ('' = none).
    prefix: prepended to every key, e.g. 'model.'.

  Returns:
    Dotted config field → value text.
  """
  out = {}
  for item in (spec or '').split(','):
    if not item.strip():
      continue
    if '=' not in item:
      raise ValueError(f'override {item!r} is not key=value (e.g. scan_layers=True)')
    key, value = item.split('=', 1)
    out[prefix + key.strip()] = value.strip()
  return out


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
  """Sets dotted fields of `config` in place; string values take the field's type.

  Args:
    config: experiment config.
    overrides: dotted field (e.g. 'model.scan_layers') → value or value text.

  Raises:
    ValueError: an unknown field (naming the valid ones) or an unparsable value.
  """
  for dotted, value in overrides.items():
    node, parts = config, dotted.split('.')
    for part in parts[:-1]:
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise ValueError(f'override {dotted}: config has no section {part!r}')
      node = node[part]
    leaf = parts[-1]
    if leaf not in node:
      raise ValueError(f'override {dotted}: unknown field; valid: {sorted(node.keys())}')
    if isinstance(value, str):
      try:
        value = _coerce(value, node[leaf])
      except ValueError as e:
        raise ValueError(f'override {dotted}={value}: {e}') from e
    node[leaf] = value


def use_one_device(c: ml_collections.ConfigDict) -> None:
  """Sets a 1-device mesh (`jax_train.mesh_devices` then picks the first device)."""
  c.mesh = ml_collections.ConfigDict({'data': 1, 'fsdp': 1, 'model': 1})


def transformer_config(shape: TransformerShape,
                       overrides: Optional[Mapping[str, Any]] = None) -> ml_collections.ConfigDict:
  """configs/default.py with the model, batch and optimizer of `shape` (Adam, float32).

  Args:
    shape: the train shape.
    overrides: dotted config fields applied last (e.g. {'model.dtype': 'bfloat16'}).

  Returns:
    A validated config with a 1-device mesh.
  """
  c = configlib.repo_config('default.py')
  m = c.model
  m.emb_dim = m.qkv_dim = shape.emb_dim
  m.num_heads, m.mlp_dim = shape.num_heads, shape.mlp_dim
  m.num_encoder_layers, m.num_decoder_layers = shape.num_encoder_layers, shape.num_decoder_layers
  m.share_embeddings = m.tie_output = True
  m.dtype = 'float32'  # rows name their precision ('auto' would be bfloat16 on TPU/GPU)
  m.dropout_rate = shape.dropout_rate
  m.max_len = max(shape.source_length, shape.target_length)
  c.task.max_input_length, c.task.max_target_length = shape.source_length, shape.target_length
  c.train.batch_size = shape.batch_size
  c.train.label_smoothing = shape.label_smoothing
  # Plain Adam, as the PyTorch reference (torch.optim.Adam, no clipping, constant lr).
  o = c.optimizer
  o.name, o.schedule, o.warmup_steps = 'adam', 'constant', 0
  o.grad_clip_norm = o.weight_decay = 0.0
  use_one_device(c)
  apply_overrides(c, overrides or {})
  configlib.validate(c)
  return c


def lstm_config(shape: LSTMShape) -> ml_collections.ConfigDict:
  """configs/ptb_lstm.py (model, optimizer, dropout) at the sizes of `shape`.

  Returns:
    A validated config with a 1-device mesh (its task needs data and is not built).
  """
  c = configlib.repo_config('ptb_lstm.py')
  c.model.emb_dim, c.model.hidden_dim, c.model.num_layers = (shape.emb_dim, shape.hidden_dim,
                                                             shape.num_layers)
  c.model.dtype = 'float32'  # as transformer_config: the rows are float32 on every platform
  c.task.max_target_length = shape.length
  c.train.batch_size = shape.batch_size
  use_one_device(c)
  configlib.validate(c)
  return c


def random_ids(rng: np.random.Generator, shape, vocab_size: int) -> np.ndarray:
  """int32 ids uniform in 2..V-1: never padding (0) nor EOS (1)."""
  return rng.integers(2, vocab_size, size=shape, dtype=np.int32)


def transformer_batch(shape: TransformerShape, seed: int = 0) -> Dict[str, np.ndarray]:
  """{'inputs': (B, S), 'targets': (B, T)} int32 random ids, no padding."""
  rng = np.random.default_rng(seed)
  return {'inputs': random_ids(rng, (shape.batch_size, shape.source_length), shape.vocab_size),
          'targets': random_ids(rng, (shape.batch_size, shape.target_length), shape.vocab_size)}


def lstm_batch(shape: LSTMShape, seed: int = 0) -> Dict[str, np.ndarray]:
  """{'targets': (B, T)} int32 random ids, no padding."""
  rng = np.random.default_rng(seed)
  return {'targets': random_ids(rng, (shape.batch_size, shape.length), shape.vocab_size)}
