"""BERT's masked-LM noise (Devlin et al., 2019, §3.1), one example at a time.

Each regular token is selected with probability 0.15 (independently, as Hugging Face's
`DataCollatorForLanguageModeling`); a selected token becomes [MASK] with probability
0.8, a random regular token with 0.1, and stays itself with 0.1. Padding, EOS, unknown
and [MASK] itself are never selected. The targets hold the original token at selected
positions and 0 (padding: loss weight 0) everywhere else, so the loss counts only the
selected positions.

lmjax's tokenizers have no [MASK]: it is the id after the tokenizer's vocabulary
(`mask_id(pieces)`), and the model's vocabulary is one larger. In the training stream each
example's draws come from (data seed, stream index) alone (`pipeline.example_rng`): a
resumed run masks what an uninterrupted one did, and each epoch masks anew.
"""

from typing import Dict, Mapping, Optional, Sequence

import numpy as np


SELECT_RATE = 0.15
MASK_FRACTION = 0.8
RANDOM_FRACTION = 0.1
FIRST_REGULAR_ID = 3  # after padding 0, EOS 1 and unknown 2


def mask_id(pieces: int) -> int:
  """The [MASK] id for a tokenizer of `pieces` ids: the next one."""
  return int(pieces)


def mask_tokens(tokens: Sequence[int], rng: np.random.Generator, mask: int,
                select_rate: float = SELECT_RATE, mask_fraction: float = MASK_FRACTION,
                random_fraction: float = RANDOM_FRACTION,
                regular: Optional[Sequence[int]] = None) -> Dict[str, np.ndarray]:
  """Masks one token sequence.

  Args:
    tokens: (S,) ids (padding 0 allowed).
    rng: the example's generator.
    mask: the [MASK] id.
    select_rate: probability that a regular token is selected.
    mask_fraction, random_fraction: of the selected, the share set to [MASK] and the
      share set to a random regular token (the rest stay unchanged).
    regular: [low, high) ids that can be selected and drawn as random replacements;
      default [3, mask).

  Returns:
    inputs: (S,) int32 with the selected tokens replaced.
    targets: (S,) int32 original token where selected, else 0.
  """
  low, high = regular if regular is not None else (FIRST_REGULAR_ID, mask)
  tokens = np.asarray(tokens, np.int32)
  eligible = (tokens >= low) & (tokens < high) & (tokens != mask)  # (S,)
  selected = eligible & (rng.random(tokens.shape) < select_rate)
  u = rng.random(tokens.shape)
  to_mask = selected & (u < mask_fraction)
  to_random = selected & (u >= mask_fraction) & (u < mask_fraction + random_fraction)
  random_ids = rng.integers(low, high, size=tokens.shape)
  inputs = np.where(to_mask, mask, np.where(to_random, random_ids, tokens)).astype(np.int32)
  return {'inputs': inputs, 'targets': np.where(selected, tokens, 0).astype(np.int32)}


class MaskedLM:
  """The per-example noise of a masked-LM stream: (the example's generator, {'tokens': ids})
  → {'inputs', 'targets'}. The training stream draws the generator from (data seed,
  stream index): `lmjax.data.stream.StreamIterator`'s `transform`.

  Attributes:
    mask: the [MASK] id (`mask_id(tokenizer pieces)`).
    select_rate, mask_fraction, random_fraction: BERT's 0.15, 0.8, 0.1.
  """

  def __init__(self, mask: int, select_rate: float = SELECT_RATE,
               mask_fraction: float = MASK_FRACTION, random_fraction: float = RANDOM_FRACTION):
    if not 0.0 < select_rate < 1.0:
      raise ValueError(f'masked LM select_rate must be in (0, 1), got {select_rate}')
    if mask_fraction < 0 or random_fraction < 0 or mask_fraction + random_fraction > 1:
      raise ValueError('masked LM mask_fraction and random_fraction must be ≥ 0 and sum to at '
                       f'most 1, got {mask_fraction} and {random_fraction}')
    if mask <= FIRST_REGULAR_ID:
      raise ValueError(f'masked LM [MASK] id must come after the regular tokens, got {mask}')
    self.mask = int(mask)
    self.select_rate, self.mask_fraction = float(select_rate), float(mask_fraction)
    self.random_fraction = float(random_fraction)

  def __call__(self, rng: np.random.Generator, example: Mapping[str, np.ndarray]
               ) -> Dict[str, np.ndarray]:
    """Args: rng: the example's generator; example: {'tokens': (S,) ids}.
    Returns {'inputs', 'targets'}."""
    return mask_tokens(example['tokens'], rng, self.mask, self.select_rate, self.mask_fraction,
                       self.random_fraction)
