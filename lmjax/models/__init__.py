"""Model registry: (family, kind) → module class and its hyperparameter dataclass.

See CONTRACT.md in this folder for the batch, logits and decoding contract.
"""

import dataclasses
from typing import Callable, Dict, Tuple

import flax.linen as nn

from lmjax.models import heads
from lmjax.models import lstm
from lmjax.models import lstm_vae
from lmjax.models import transformer

# (family, kind) → (module class, hyperparameter dataclass). Every model is listed here.
REGISTRY: Dict[Tuple[str, str], Tuple[Callable[..., nn.Module], type]] = {
    ('transformer', 'encdec'): (transformer.EncoderDecoder, transformer.TransformerConfig),
    ('transformer', 'decoder'): (transformer.DecoderOnly, transformer.TransformerConfig),
    ('transformer', 'encoder'): (heads.TransformerEncoderModel, heads.TransformerEncoderConfig),
    ('lstm', 'encdec'): (lstm.LSTMEncoderDecoder, lstm.LSTMConfig),
    ('lstm', 'decoder'): (lstm.LSTMLanguageModel, lstm.LSTMConfig),
    ('lstm', 'encoder'): (heads.LSTMEncoderModel, lstm.LSTMConfig),
    ('lstm', 'vae'): (lstm_vae.LSTMVAE, lstm_vae.VAEConfig),
}

# Fields of config.model that select the model rather than parameterise it.
SELECTORS = ('family', 'kind')
# config.model.padded_vocab_size: > 0 gives the embedding and logits tables this many rows,
# at least the tokenizer's (a published checkpoint's vocabulary: T5's 32128 rows for 32000
# SentencePiece pieces and 100 sentinels); 0 = the tokenizer's size.
PADDED_VOCAB = 'padded_vocab_size'
# config.model.never_emit: token ids the decoders never choose (`never_emitted`), e.g. the
# copies of GPT-2's <|endoftext|> row at lmjax's BOS and unknown ids, which score exactly as
# EOS does (experiments/import_hf.py sets it); [] = none.
NEVER_EMIT = 'never_emit'


def never_emitted(model_config) -> Tuple[int, ...]:
  """The ids the decoders must never choose for this `config.model` (its `never_emit`).

  Args:
    model_config: the `config.model` ConfigDict (or dict); model sections without the field
      (LSTM sections, workdirs written before it) ban nothing.

  Returns:
    A tuple of ints, for `lmjax.decoding` `banned_ids`.
  """
  return tuple(int(i) for i in dict(model_config).get(NEVER_EMIT, ()))


def build_model(model_config, **sizes) -> nn.Module:
  """Builds the module named by `model_config.family` and `model_config.kind`.

  Args:
    model_config: the `config.model` ConfigDict (or dict): `family`, `kind` and
      every field of the family's hyperparameter dataclass except the sizes.
    **sizes: fields that come from the data, e.g. vocab_size=…, target_vocab_size=…,
      num_classes=…; vocabulary sizes are raised to `config.model.padded_vocab_size`.

  Returns:
    An unbound flax module.

  Raises:
    ValueError: unknown family/kind, or fields missing or unknown.
  """
  cfg = dict(model_config)
  key = (cfg.get('family'), cfg.get('kind'))
  if key not in REGISTRY:
    valid = ', '.join(f'{f}/{k}' for f, k in sorted(REGISTRY))
    raise ValueError(f'config.model.family/kind = {key[0]}/{key[1]} is not a model; valid: {valid}')
  module_cls, config_cls = REGISTRY[key]
  fields = {f.name for f in dataclasses.fields(config_cls)}
  padded = cfg.pop(PADDED_VOCAB, 0) or 0
  cfg.pop(NEVER_EMIT, None)  # the decoders' business (`never_emitted`), not the module's
  values = {k: v for k, v in cfg.items() if k not in SELECTORS}
  values.update({k: v for k, v in sizes.items() if k in fields})
  for name in ('vocab_size', 'target_vocab_size'):
    if padded and name in values:
      if values[name] > padded:
        raise ValueError(f'config.model.{PADDED_VOCAB}={padded} is smaller than the '
                         f'vocabulary ({name}={values[name]})')
      values[name] = padded
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ValueError(f'config.model has fields {unknown} that {config_cls.__name__} does not take; '
                     f'valid fields: {sorted(fields)}')
  missing = sorted(f.name for f in dataclasses.fields(config_cls)
                   if f.name not in values and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING)
  if missing:
    raise ValueError(f'config.model is missing fields {missing} for {config_cls.__name__}')
  return module_cls(config_cls(**values))
