"""Encoder models (kind = 'encoder'): sequence classification, tagging and masked-LM heads.

The same heads sit on a (bi)LSTM or a Transformer encoder so that the families
can be compared: head='classify' pools over real positions → (B, C) logits;
head='tag' gives per-position emissions (B, S, C), optionally scored by a
linear-chain CRF (see `lmjax.models.crf` for how the padding tag 0 is handled).
head='mlm' (Transformer only) gives per-position vocabulary logits (B, S, V) through
BERT's masked-LM head, for pretraining (lmjax.data.masked_lm).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import platforms
from lmjax.models import crf
from lmjax.models import dropout_mask
from lmjax.models import layers
from lmjax.models import lstm
from lmjax.models import transformer

POOLINGS = ('last', 'mean', 'max', 'attention')
HEADS = ('classify', 'tag', 'mlm')
UNK_ID = 2  # the tokenizers' <unk> id (CONTRACT.md)
NUM_BYTE_IDS = 257  # batch['chars']: UTF-8 byte + 1, 0 = padding

@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerEncoderConfig(transformer.TransformerCoreConfig):
  """Transformer encoder classifier/tagger: the Transformer core fields plus the head's.

  Attributes:
    pooling: 'last', 'mean', 'max' or 'attention' (head='classify').
    use_crf: linear-chain CRF on the tag emissions (head='tag').
    head: 'classify', 'tag' or 'mlm' (masked-LM pretraining: vocabulary logits per position).
    num_classes: classes (classify) or tag ids incl. padding id 0 (tag); set by the trainer.
  """
  pooling: str
  use_crf: bool
  head: str
  num_classes: int = 0


def check_head_config(cfg):
  """Validates the head fields shared by the encoder configs."""
  lstm.check(cfg.head in HEADS, 'head', f'must be one of {HEADS} for kind=encoder, '
             f'got {cfg.head!r}')
  lstm.check(cfg.head != 'classify' or cfg.pooling in POOLINGS, 'pooling',
             f'must be one of {POOLINGS}, got {cfg.pooling!r}')
  lstm.check(not cfg.use_crf or cfg.head == 'tag', 'use_crf', "needs head='tag'")
  lstm.check(cfg.vocab_size > 0 and (cfg.num_classes > 0 or cfg.head == 'mlm'), 'num_classes',
             'vocab_size and num_classes must be > 0 (passed by the trainer to build_model)')


def replace_by_unk(model: nn.Module, inputs, rate: float, train: bool, permille=None):
  """Word dropout: in training, each real token of `inputs` (B, S) becomes UNK_ID with
  probability `rate` (draws from `model`'s 'dropout' rng stream).

  permille: optional (B, S) int32 per-token probabilities in 1/1000 (batch field
    `unk_permille`, see lmjax.data.labeled_tasks.unk_permille), drawn independently of
    `rate`: a token is kept only if both keep it.
  """
  if not train or (rate == 0.0 and permille is None):
    return inputs
  if permille is None:
    drop = ~dropout_mask.keep_mask(model.make_rng('dropout'), inputs.shape, rate)  # (B, S)
  else:
    keep = (1.0 - rate) * (1.0 - permille.astype(jnp.float32) / 1000.0)  # (B, S)
    drop = jax.random.uniform(model.make_rng('dropout'), inputs.shape) >= keep
  return jnp.where(drop & (inputs > 0), UNK_ID, inputs)


class CharCNN(nn.Module):
  """Word features from a max-pooled convolution over the word's byte embeddings
  (Ma & Hovy, 2016): spelling, case and affixes of words the vocabulary never saw.

  Attributes:
    dim: byte-embedding width E.
    filters: output features F.
    width: convolution window (bytes).
    dropout_rate: dropout on the byte embeddings.
    dtype: computation dtype.
  """
  dim: int
  filters: int
  width: int
  dropout_rate: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, chars, *, deterministic: bool):
    """Args: chars (B, S, W) byte ids (0 = padding). Returns (B, S, F); 0 for padding words."""
    b, s, w = chars.shape
    x = layers.Embed(NUM_BYTE_IDS, self.dim, self.dtype, init='lstm',
                     name='byte_embed')(chars)  # (B, S, W, E)
    x = layers.Dropout(self.dropout_rate)(x, deterministic)
    conv = nn.Conv(self.filters, (self.width,), padding='SAME', dtype=self.dtype, name='conv',
                   kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(),
                                                            (None, 'embed', 'hidden')),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('hidden',)))
    y = conv(x.reshape(b * s, w, self.dim)).reshape(b, s, w, self.filters)  # (B, S, W, F)
    real = (chars > 0)[..., None]  # (B, S, W, 1)
    pooled = jnp.max(jnp.where(real, y, layers.NEG_INF), axis=2)  # (B, S, F)
    return jnp.where(jnp.any(real, axis=2), pooled, 0.0).astype(self.dtype)


class Head(nn.Module):
  """Classification (pooled) or tagging (per position) output layer.

  Attributes:
    head: 'classify' or 'tag'.
    pooling: 'last', 'mean', 'max' (per feature over real positions; Conneau et al.,
      2017) or 'attention' (classify only).
    num_classes: output classes C.
    dropout_rate: dropout on the features.
    dtype: computation dtype.
  """
  head: str
  pooling: str
  num_classes: int
  dropout_rate: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, mask, last, *, deterministic: bool):
    """Logits from encoder features.

    Args:
      features: (B, S, D) encoder outputs.
      mask: (B, S) bool, True on real positions.
      last: (B, D) summary at the sequence end (used by pooling='last').
      deterministic: disables dropout.

    Returns:
      (B, C) logits for 'classify', (B, S, C) emissions for 'tag'; float32.
    """
    out = lambda name: layers.dense(self.num_classes, ('hidden', 'classes'), self.dtype, name=name)
    drop = layers.Dropout(self.dropout_rate)
    if self.head == 'tag':
      return out('tag_logits')(drop(features, deterministic=deterministic)).astype(jnp.float32)
    m = mask.astype(features.dtype)[..., None]  # (B, S, 1)
    if self.pooling == 'last':
      pooled = last
    elif self.pooling == 'mean':
      pooled = jnp.sum(features * m, 1) / jnp.maximum(jnp.sum(m, 1), 1.0)  # (B, D)
    elif self.pooling == 'max':
      pooled = jnp.max(jnp.where(mask[..., None], features, layers.NEG_INF), 1)  # (B, D)
      pooled = jnp.where(jnp.any(mask, 1, keepdims=True), pooled, 0.0)  # an empty row: zeros
    else:  # additive self-attention pooling (Yang et al., 2016)
      d = features.shape[-1]
      u = jnp.tanh(layers.dense(d, ('hidden_in', 'hidden'), self.dtype, name='pool_hidden')(features))
      scores = layers.dense(1, ('hidden', None), self.dtype, name='pool_score')(u)[..., 0]  # (B, S)
      weights = jax.nn.softmax(jnp.where(mask, scores.astype(jnp.float32), layers.NEG_INF), -1)
      weights = jnp.where(mask, weights, 0.0)
      self.sow('intermediates', 'pooling_weights', weights)
      pooled = jnp.einsum('bs,bsd->bd', weights.astype(features.dtype), features)  # (B, D)
    return out('class_logits')(drop(pooled, deterministic=deterministic)).astype(jnp.float32)


class MLMHead(nn.Module):
  """BERT's masked-LM head: dense + exact GELU + norm, then logits tied to the input
  embedding plus a vocabulary bias (Devlin et al., 2019; `cls.predictions` in BERT
  checkpoints).

  Attributes:
    embed: the encoder's token embedding (its table gives the logits).
    norm, norm_epsilon: the norm after the transform (the encoder's kind and epsilon).
    dtype: computation dtype.
  """
  embed: nn.Module
  norm: str = 'layernorm'
  norm_epsilon: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, mask, last, *, deterministic: bool):
    """Args: features (B, S, D); mask, last: unused (the head scores every position).
    Returns (B, S, V) float32 logits."""
    del mask, last
    d = features.shape[-1]
    h = layers.dense(d, ('hidden_in', 'embed'), self.dtype, name='transform')(features)
    h = layers.layer_norm(name='transform_ln', dtype=self.dtype, kind=self.norm,
                          epsilon=self.norm_epsilon)(nn.gelu(h, approximate=False))
    logits = self.embed.attend(h, deterministic).astype(jnp.float32)  # (B, S, V)
    bias = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros, ('vocab',)),
                      (logits.shape[-1],))
    return logits + bias


class CRFParams(nn.Module):
  """Transition, start and end scores of a linear-chain CRF over `num_tags` tag ids."""
  num_tags: int

  @nn.compact
  def __call__(self):
    """Returns (transitions (C, C), start (C,), end (C,))."""
    init = lambda names: nn.with_logical_partitioning(nn.initializers.zeros, names)
    c = self.num_tags
    # An array cannot name one logical axis twice; the (tiny) C×C table is replicated anyway.
    return (self.param('transitions', init((None, 'classes')), (c, c)),
            self.param('start', init(('classes',)), (c,)),
            self.param('end', init(('classes',)), (c,)))


class EncoderModelBase(nn.Module):
  """Shared `__call__`, `crf_nll` and `crf_decode`; subclasses define `features`.

  Subclass setup must create `self.head` (Head) and, with use_crf, `self.crf` (CRFParams).
  """

  def features(self, batch, *, train: bool):
    """Returns features (B, S, D) and last-position summary (B, D)."""
    raise NotImplementedError  # abstract

  def __call__(self, batch, *, train: bool):
    """Class logits (B, C) or tag emissions (B, S, C) for batch['inputs'] (B, S)."""
    lstm.check_no_packing(batch, 'encoder')
    inputs = batch['inputs']
    feats, last = self.features(batch, train=train)
    if self.config.use_crf:
      self.crf()  # creates the CRF parameters at init
    return self.head(feats, inputs > 0, last, deterministic=not train)

  def crf_nll(self, batch, *, train: bool):
    """The tag emissions (B, S, C) and the (B,) CRF negative log-likelihood of
    batch['tags'] (0 for all-padding rows), from one forward pass."""
    emissions = self(batch, train=train)  # (B, S, C)
    return emissions, crf.nll(emissions, batch['tags'], batch['inputs'] > 0, *self.crf())

  def crf_decode(self, batch, score_bias=None):
    """(B, S) int32 Viterbi tags (1..C-1 on real positions, 0 on padding).

    score_bias: optional (C,) added to every position's emissions before the search.
    """
    emissions = self(batch, train=False)  # (B, S, C)
    if score_bias is not None:
      emissions = emissions + score_bias
    return crf.viterbi(emissions, batch['inputs'] > 0, *self.crf())


class LSTMEncoderModel(EncoderModelBase):
  """(Bi)LSTM classifier or tagger (family 'lstm', kind 'encoder')."""
  config: lstm.LSTMConfig

  def setup(self):
    cfg = self.config
    check_head_config(cfg)
    dt = cfg.jnp_dtype
    lstm.check(0.0 <= cfg.word_dropout < 1.0, 'word_dropout', f'must be in [0, 1), got {cfg.word_dropout}')
    lstm.check(cfg.head != 'mlm', 'head', "'mlm' needs family='transformer' (pretrain an LSTM "
               "as a language model: kind='decoder')")
    self.embed = layers.Embed(cfg.vocab_size, cfg.emb_dim, dt, init='lstm')
    if cfg.char_dim:
      self.chars = CharCNN(cfg.char_dim, cfg.char_filters, cfg.char_width, cfg.dropout_rate, dt)
    self.dropout = layers.Dropout(cfg.dropout_rate)
    self.encoder = lstm.LSTMStack(cfg.hidden_dim, cfg.num_layers, cfg.dropout_rate,
                                  cfg.bidirectional, dt)
    self.head = Head(cfg.head, cfg.pooling, cfg.num_classes, cfg.dropout_rate, dt)
    if cfg.use_crf:
      self.crf = CRFParams(cfg.num_classes)

  def features(self, batch, *, train: bool):
    """Returns outputs (B, S, D·H) and the top layer's final h per direction, concatenated."""
    cfg, inputs = self.config, batch['inputs']
    x = self.embed(replace_by_unk(self, inputs, cfg.word_dropout, train,
                                  batch.get('unk_permille')))  # (B, S, E)
    if cfg.char_dim:
      lstm.check('chars' in batch, 'char_dim', f'= {cfg.char_dim} needs the batch field `chars`: '
                 'set config.task.word_chars > 0 (bytes per word)')
      x = jnp.concatenate([x, self.chars(batch['chars'], deterministic=not train)], -1)  # (B, S, E+F)
    x = self.dropout(x, deterministic=not train)
    outputs, states = self.encoder(x, jnp.sum(inputs > 0, -1), deterministic=not train)
    last = jnp.concatenate([h for _, h in states[-1]], -1).astype(outputs.dtype)  # (B, D·H)
    return outputs, last


class TransformerEncoderModel(EncoderModelBase):
  """Transformer classifier or tagger (family 'transformer', kind 'encoder')."""
  config: TransformerEncoderConfig

  def setup(self):
    cfg = self.config
    check_head_config(cfg)
    dt = cfg.jnp_dtype
    self.embed = layers.Embed(cfg.vocab_size, cfg.emb_dim, dt, scale=cfg.embed_scale)
    self.encoder = transformer.Encoder(cfg, self.embed)
    if cfg.head == 'mlm':
      self.head = MLMHead(self.embed, cfg.norm, cfg.norm_epsilon, dt)
    else:
      self.head = Head(cfg.head, cfg.pooling, cfg.num_classes, cfg.dropout_rate, dt)
    if cfg.use_crf:
      self.crf = CRFParams(cfg.num_classes)

  def features(self, batch, *, train: bool):
    """Returns encoder outputs (B, S, D) and those at each row's last real position."""
    inputs = batch['inputs']
    outputs = self.encoder(inputs, deterministic=not train)  # (B, S, D)
    last_idx = jnp.maximum(jnp.sum(inputs > 0, -1) - 1, 0)  # (B,)
    last = jnp.take_along_axis(outputs, last_idx[:, None, None], axis=1)[:, 0]  # (B, D)
    return outputs, last
