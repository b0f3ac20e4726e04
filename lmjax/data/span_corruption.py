"""T5's span corruption (Raffel et al., 2020, §3.1.4), as seqio's `span_corruption` does it.

Documents are concatenated into one token stream and cut into chunks of a raw length
(`random_spans_helper`: 141 raw tokens give 128 input and 29 target tokens at the default
noise density 0.15 and mean span length 3). In each chunk, `random_spans_noise_mask`
marks noise spans: the chunk alternates non-noise / noise spans, starting with non-noise
and ending with noise, with exactly round(density · length) noise tokens in
round(noise / mean span length) spans whose lengths are a random composition. The inputs
keep the non-noise tokens and replace each noise span by one sentinel; the targets hold
each noise span after its sentinel; both end with EOS:

    tokens   The  cute dog  walks in   the  park
    noise     .    ##   ##    .    ##   .    .
    inputs   The  <X>  walks  <Y>  the  park  </s>
    targets  <X>  cute  dog   <Y>  in   </s>

Sentinels come after the tokenizer's vocabulary in seqio's layout: with `extra_ids`
sentinels the vocabulary has V = pieces + extra_ids ids, `<extra_id_0>` = V − 1, and the
k-th span of a chunk gets V − 1 − k (what `transformers.T5Tokenizer(extra_ids=100)`
assigns). In the training stream each example's mask is drawn from (data seed, index)
alone, where the index is the example's position in the endless shuffled stream
(epoch · N + position): data order and masks resume exactly, and every epoch draws anew.
"""

from typing import Dict, Mapping, Sequence, Tuple

import numpy as np

from lmjax.data import tokenizers as tok_lib

# seqio's defaults (t5.data.preprocessors.span_corruption).
NOISE_DENSITY = 0.15
MEAN_NOISE_SPAN_LENGTH = 3.0


def random_spans_helper(inputs_length: int, noise_density: float = NOISE_DENSITY,
                        mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
                        extra_tokens_per_span_inputs: int = 1,
                        extra_tokens_per_span_targets: int = 1) -> Tuple[int, int]:
  """The raw chunk length whose corrupted inputs fill `inputs_length` tokens (EOS included).

  Args:
    inputs_length: model input length, e.g. 512.
    noise_density: fraction of raw tokens that are noise.
    mean_noise_span_length: mean noise span length.
    extra_tokens_per_span_inputs: tokens each noise span leaves in the inputs (a sentinel).
    extra_tokens_per_span_targets: tokens each span adds to the targets (a sentinel).

  Returns:
    (raw tokens per chunk, target length with EOS): 512 → (568, 114), 128 → (141, 29).
  """
  def lengths(tokens_length):
    num_noise = int(round(tokens_length * noise_density))
    num_nonnoise = tokens_length - num_noise
    num_spans = int(round(num_noise / mean_noise_span_length))
    # inputs: the non-noise tokens, a sentinel per span and EOS; targets likewise.
    return (num_nonnoise + num_spans * extra_tokens_per_span_inputs + 1,
            num_noise + num_spans * extra_tokens_per_span_targets + 1)

  if inputs_length < 2:
    raise ValueError(f'span corruption inputs length must be at least 2, got {inputs_length}')
  tokens_length = inputs_length - 1
  while lengths(tokens_length + 1)[0] <= inputs_length:
    tokens_length += 1
  inputs, targets = lengths(tokens_length)
  # seqio's adjustment: at density 0.5 keep the targets no longer than the inputs.
  if noise_density == 0.5 and targets > inputs:
    tokens_length -= 1
    targets -= 1
  return tokens_length, targets


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator
                         ) -> np.ndarray:
  """A uniformly random composition of `num_items` into `num_segments` positive parts."""
  first_in_segment = np.zeros(num_items, np.int64)  # (num_items,)
  first_in_segment[1:] = rng.permutation(np.arange(num_items - 1) < num_segments - 1)
  segment_id = np.cumsum(first_in_segment)
  return np.bincount(segment_id, minlength=num_segments)  # (num_segments,)


def random_spans_noise_mask(length: int, rng: np.random.Generator,
                            noise_density: float = NOISE_DENSITY,
                            mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH
                            ) -> np.ndarray:
  """seqio's noise mask: non-noise and noise spans alternate, the last span is noise.

  Counts are computed as seqio does (float32, round half to even): noise tokens
  round(length · density) clipped to [1, length − 1], spans round(noise / mean) ≥ 1.

  Args:
    length: raw tokens in the chunk.
    rng: the example's generator.
    noise_density: fraction of tokens that are noise.
    mean_noise_span_length: mean length of a noise span.

  Returns:
    (length,) bool, True on noise tokens.
  """
  orig_length = length
  length = max(length, 2)  # seqio: avoid degeneracy on one-token chunks
  num_noise = int(np.round(np.float32(length) * np.float32(noise_density)))
  num_noise = min(max(num_noise, 1), length - 1)
  num_spans = max(int(np.round(np.float32(num_noise) / np.float32(mean_noise_span_length))), 1)
  noise_lengths = _random_segmentation(num_noise, num_spans, rng)
  nonnoise_lengths = _random_segmentation(length - num_noise, num_spans, rng)
  interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)  # (2·spans,)
  span_starts = np.cumsum(interleaved)[:-1]
  start_indicator = np.zeros(length, np.int64)
  start_indicator[span_starts] = 1
  is_noise = np.cumsum(start_indicator) % 2 == 1
  return is_noise[:orig_length]


def _spans_to_sentinels(tokens: np.ndarray, mask: np.ndarray, first_sentinel: int) -> np.ndarray:
  """Each run of masked tokens → one sentinel (first_sentinel, first_sentinel − 1, …)."""
  previous = np.concatenate([[False], mask[:-1]])
  first = mask & ~previous
  subsequent = mask & previous
  sentinels = first_sentinel + 1 - np.cumsum(first)
  return np.where(first, sentinels, tokens)[~subsequent]


def sentinel_id(vocab_size: int, k: int = 0) -> int:
  """The id of `<extra_id_k>` in a vocabulary of `vocab_size` ids (sentinels included)."""
  return vocab_size - 1 - k


def corrupt(tokens: Sequence[int], rng: np.random.Generator, vocab_size: int,
            noise_density: float = NOISE_DENSITY,
            mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH
            ) -> Dict[str, np.ndarray]:
  """One chunk → {'inputs', 'targets'} (int32, each ending with EOS).

  Args:
    tokens: the raw chunk (no EOS), ids below the sentinels.
    rng: the example's generator (`pipeline.example_rng` in the training stream).
    vocab_size: V, sentinels included (`<extra_id_0>` = V − 1).
    noise_density, mean_noise_span_length: as `random_spans_noise_mask`.

  Returns:
    inputs: non-noise tokens with a sentinel per noise span, then EOS.
    targets: each noise span after its sentinel, then EOS.
  """
  tokens = np.asarray(tokens, np.int32)
  mask = random_spans_noise_mask(len(tokens), rng, noise_density, mean_noise_span_length)
  first = sentinel_id(vocab_size)
  eos = np.array([tok_lib.EOS_ID], np.int32)
  return {'inputs': np.concatenate([_spans_to_sentinels(tokens, mask, first), eos]),
          'targets': np.concatenate([_spans_to_sentinels(tokens, ~mask, first), eos])}


class SpanCorruption:
  """The per-example noise of a span-corruption stream: (the example's generator,
  {'tokens': raw chunk}) → {'inputs', 'targets'}. The training stream draws the generator
  from (data seed, stream index): `lmjax.data.stream.StreamIterator`'s `transform`.

  Attributes:
    vocab_size: V with sentinels (tokenizer pieces + extra ids).
    noise_density, mean_noise_span_length: seqio's parameters.
  """

  def __init__(self, vocab_size: int, noise_density: float = NOISE_DENSITY,
               mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH):
    if not 0.0 < noise_density < 1.0:
      raise ValueError(f'span corruption noise_density must be in (0, 1), got {noise_density}')
    if mean_noise_span_length < 1.0:
      raise ValueError('span corruption mean_noise_span_length must be at least 1, got '
                       f'{mean_noise_span_length}')
    self.vocab_size = int(vocab_size)
    self.noise_density = float(noise_density)
    self.mean_noise_span_length = float(mean_noise_span_length)

  def __call__(self, rng: np.random.Generator, example: Mapping[str, np.ndarray]
               ) -> Dict[str, np.ndarray]:
    """Args: rng: the example's generator; example: {'tokens': the raw chunk}.
    Returns {'inputs', 'targets'}."""
    return corrupt(example['tokens'], rng, self.vocab_size, self.noise_density,
                   self.mean_noise_span_length)
