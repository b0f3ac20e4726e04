"""LSTM baselines: attentional encoder-decoder and language model.

References:
  Sutskever et al. (2014), Sequence to sequence learning with neural networks.
  Bahdanau et al. (2015), Neural machine translation by jointly learning to align and translate.
  Luong et al. (2015), Effective approaches to attention-based neural machine translation.
  Zaremba et al. (2014), Recurrent neural network regularization.
"""

import dataclasses
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import platforms
from lmjax.models import layers
from lmjax.models import lstm_layers

ATTENTIONS = ('bahdanau', 'luong_dot', 'luong_general', 'none')

# Per-layer states: a tuple over layers of (c, h), each (B, H).
LayerStates = Tuple[Tuple[jnp.ndarray, jnp.ndarray], ...]

# The recurrent layers live in lstm_layers; these names are the family's public API.
lstm_cell = lstm_layers.lstm_cell
LSTMStack = lstm_layers.LSTMStack
StateCache = lstm_layers.StateCache


@dataclasses.dataclass(frozen=True)
class LSTMConfig:
  """LSTM family hyperparameters (values come from `config.model`).

  One dataclass serves the three kinds; fields a kind does not use are ignored
  by it (e.g. `attention` by the language model, `pooling` by encdec).

  Attributes:
    emb_dim: embedding width E.
    hidden_dim: LSTM width H (per direction).
    num_layers: encoder depth (encdec, encoder) or LM depth (decoder).
    num_decoder_layers: decoder depth (encdec).
    dropout_rate: dropout on embeddings, between layers and before the output layer.
    bidirectional: bidirectional encoder (encdec, encoder).
    attention: 'bahdanau' (additive), 'luong_dot', 'luong_general' or 'none' (encdec).
    input_feeding: feed the previous attentional vector into the next decoder step (encdec).
    tie_output: output logits through the target embedding matrix (encdec, decoder).
    share_embeddings: one embedding table for source and target (encdec; equal vocabs).
    pooling: 'last', 'mean' or 'attention' pooling for head='classify' (encoder).
    use_crf: linear-chain CRF on top of the tag emissions (encoder, head='tag').
    head: 'classify' or 'tag' (encoder); '' for the other kinds.
    word_dropout: probability of replacing an input word by <unk> in training (encoder).
    char_dim: byte-embedding width of the character CNN over batch['chars'] (encoder);
      0 = no character features.
    char_filters: character CNN output features per word.
    char_width: character CNN window (bytes).
    vocab_size: source (or only) vocabulary size; set by the trainer.
    target_vocab_size: target vocabulary size (encdec, decoder); set by the trainer.
    num_classes: classes (classify) or tag ids incl. padding id 0 (tag); set by the trainer.
    dtype: computation dtype ('float32', 'bfloat16' or 'auto'); params and states stay float32.
  """
  emb_dim: int
  hidden_dim: int
  num_layers: int
  num_decoder_layers: int
  dropout_rate: float
  bidirectional: bool
  attention: str
  input_feeding: bool
  tie_output: bool
  share_embeddings: bool
  pooling: str
  use_crf: bool
  head: str
  word_dropout: float = 0.0
  char_dim: int = 0
  char_filters: int = 50
  char_width: int = 3
  vocab_size: int = 0
  target_vocab_size: int = 0
  num_classes: int = 0
  dtype: Any = 'float32'

  @property
  def jnp_dtype(self):
    return jnp.dtype(platforms.resolve_dtype(self.dtype))


def check(ok: bool, field: str, message: str):
  """Raises ValueError naming the config field when `ok` is False."""
  if not ok:
    raise ValueError(f'config.model.{field}: {message}')


def check_encoder_only_fields(cfg):
  """Word dropout and character features exist for kind='encoder' only."""
  check(cfg.word_dropout == 0.0 and cfg.char_dim == 0, 'word_dropout',
        f'word_dropout={cfg.word_dropout} / char_dim={cfg.char_dim}: word dropout and character '
        "features are implemented for kind='encoder' only; set both to 0")


def check_no_packing(batch, family: str):
  """Recurrent models read rows left to right; packed rows would leak state across segments."""
  packed = sorted(k for k in batch if k.endswith('_segmentation'))
  check(not packed, 'family', f'{family} models do not take packed batches (got {packed}); '
        'build batches without packing')


def stack_states(states: LayerStates) -> dict:
  """Per-layer (c, h) → {'c': (B, L, H), 'h': (B, L, H)} (batch-leading, for caches)."""
  return {'c': jnp.stack([c for c, _ in states], 1), 'h': jnp.stack([h for _, h in states], 1)}


def unstack_states(stacked: dict) -> LayerStates:
  """Inverse of `stack_states`."""
  return tuple((stacked['c'][:, i], stacked['h'][:, i]) for i in range(stacked['c'].shape[1]))


class DecoderCell(nn.Module):
  """One step of the attentional LSTM decoder (Luong et al., 2015 architecture).

  Input y_t (+ previous attentional vector with input feeding) → LSTM layers →
  top state h_t attends over the encoder memory → attentional vector
  tanh(W_c [context; h_t]). 'bahdanau' is the additive (MLP) score
  vᵀ tanh(W_q h_t + U m_s) in this architecture, as in OpenNMT's 'mlp' attention.
  Scanned over time by `nn.scan` for teacher forcing and run for one step when
  decoding, so both paths share parameters and code.
  """
  config: LSTMConfig

  @nn.compact
  def __call__(self, carry, y, memory, keys, mask, deterministic: bool):
    """One step.

    Args:
      carry: (per-layer (c, h) states, feed (B, H) previous attentional vector).
      y: (B, E) embedded previous target token.
      memory: (B, S, He) encoder outputs.
      keys: (B, S, H) attention keys precomputed from memory.
      mask: (B, S) bool, True on real source positions.
      deterministic: disables dropout.

    Returns:
      new carry, and (attentional vector (B, H), attention weights (B, S)).
    """
    cfg = self.config
    dt = cfg.jnp_dtype
    states, feed = carry
    x = jnp.concatenate([y, feed.astype(y.dtype)], -1) if cfg.input_feeding else y  # (B, E[+H])
    new_states = []
    for i in range(cfg.num_decoder_layers):
      if i > 0:
        x = layers.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
      state, x = lstm_cell(cfg.hidden_dim, 'embed' if i == 0 else 'hidden_in', dt, name=f'layer_{i}')(
          states[i], x)  # x: (B, H)
      new_states.append(state)
    if cfg.attention == 'none':
      out, weights = x, jnp.zeros(mask.shape, jnp.float32)
    else:
      if cfg.attention == 'bahdanau':
        query = layers.dense(cfg.hidden_dim, ('hidden_in', 'hidden'), dt, name='attention_query',
                             use_bias=False)(x)  # (B, H)
        v = self.param('attention_v', nn.with_logical_partitioning(
            nn.initializers.normal(cfg.hidden_dim ** -0.5), ('hidden',)), (cfg.hidden_dim,))
        scores = jnp.einsum('bsh,h->bs', jnp.tanh(keys + query[:, None]), v.astype(dt))  # (B, S)
      else:  # Luong dot / general: keys are memory or W_a·memory
        scores = jnp.einsum('bsh,bh->bs', keys, x)  # (B, S)
      weights = jax.nn.softmax(jnp.where(mask, scores.astype(jnp.float32), layers.NEG_INF), axis=-1)
      weights = jnp.where(mask, weights, 0.0)  # (B, S)
      context = jnp.einsum('bs,bsd->bd', weights.astype(dt), memory)  # (B, He)
      out = jnp.tanh(layers.dense(cfg.hidden_dim, ('hidden_in', 'hidden'), dt, name='attention_out',
                                  use_bias=False)(jnp.concatenate([context, x], -1)))  # (B, H)
    return (tuple(new_states), out.astype(jnp.float32)), (out, weights)


ScannedDecoder = nn.scan(DecoderCell, variable_broadcast='params',
                         split_rngs={'params': False, 'dropout': True},
                         in_axes=(1, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
                         out_axes=1)


class OutputLayer(nn.Module):
  """Dropout → target-vocabulary logits, through the (tied) embedding or a dense layer."""
  config: LSTMConfig

  @nn.compact
  def __call__(self, x, embedding: Optional[layers.Embed], *, deterministic: bool):
    """Args: x (B, T, H); embedding to tie with, or None. Returns float32 (B, T, V)."""
    cfg = self.config
    dt = cfg.jnp_dtype
    x = layers.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
    b, t = x.shape[:2]
    # On (B·T, H) rows autodiff's d(kernel) = xᵀ·dlogits contracts over the rows with
    # dlogits in place; on (B, T, H) XLA:CPU first copies dlogits (B·T, V) to (V, B·T).
    x = x.reshape(b * t, x.shape[-1])
    if embedding is None:
      logits = layers.dense(cfg.target_vocab_size, ('hidden', 'vocab'), dt, name='logits')(x)
    else:
      if x.shape[-1] != cfg.emb_dim:  # tying needs width E
        x = layers.dense(cfg.emb_dim, ('hidden', 'embed'), dt, name='projection')(x)
      logits = layers.tied_logits(x.astype(dt), embedding.embedding.astype(dt))  # = attend(x)
    logits = logits.astype(jnp.float32).reshape(b, t, -1)  # (B, T, V)
    return nn.with_logical_constraint(
        logits, ('activation_batch', 'activation_length', 'activation_vocab'))


class LSTMEncoderDecoder(nn.Module):
  """Attentional (bi)LSTM sequence-to-sequence model (kind = 'encdec')."""
  config: LSTMConfig

  def setup(self):
    cfg = self.config
    dt = cfg.jnp_dtype
    check_encoder_only_fields(cfg)
    check(cfg.attention in ATTENTIONS, 'attention',
          f'must be one of {ATTENTIONS}, got {cfg.attention!r}')
    check(cfg.vocab_size > 0 and cfg.target_vocab_size > 0, 'vocab_size',
          'vocab_size and target_vocab_size must be > 0 (passed by the trainer to build_model)')
    check(not cfg.share_embeddings or cfg.vocab_size == cfg.target_vocab_size, 'share_embeddings',
          f'needs equal vocab sizes, got {cfg.vocab_size} and {cfg.target_vocab_size}')
    enc_dim = cfg.hidden_dim * (2 if cfg.bidirectional else 1)
    check(cfg.attention != 'luong_dot' or enc_dim == cfg.hidden_dim, 'attention',
          "'luong_dot' needs encoder width == hidden_dim; use bidirectional=False or 'luong_general'")
    self.source_embed = layers.Embed(cfg.vocab_size, cfg.emb_dim, dt, init='lstm')
    self.target_embed = (self.source_embed if cfg.share_embeddings
                         else layers.Embed(cfg.target_vocab_size, cfg.emb_dim, dt, init='lstm'))
    self.encoder = LSTMStack(cfg.hidden_dim, cfg.num_layers, cfg.dropout_rate, cfg.bidirectional, dt)
    if cfg.bidirectional:  # [fwd; bwd] final states (2H) → decoder states (H)
      self.bridge_c = [layers.dense(cfg.hidden_dim, ('hidden_in', 'hidden'), dt)
                       for _ in range(cfg.num_decoder_layers)]
      self.bridge_h = [layers.dense(cfg.hidden_dim, ('hidden_in', 'hidden'), dt)
                       for _ in range(cfg.num_decoder_layers)]
    if cfg.attention in ('bahdanau', 'luong_general'):
      self.attention_keys = layers.dense(cfg.hidden_dim, ('hidden_in', 'hidden'), dt,
                                         use_bias=cfg.attention == 'bahdanau')
    self.dropout = layers.Dropout(cfg.dropout_rate)
    self.decoder = ScannedDecoder(cfg)
    self.output = OutputLayer(cfg)
    self.cache = StateCache()

  def encode(self, inputs, *, train: bool = False):
    """Encodes a right-padded source batch.

    Args:
      inputs: (B, S) int32 source ids, 0 = padding.
      train: enables dropout.

    Returns:
      {'memory': (B, S, He) encoder outputs, 'keys': (B, S, H) attention keys,
       'c', 'h': (B, L_dec, H) initial decoder states}.
    """
    cfg = self.config
    x = self.dropout(self.source_embed(inputs), deterministic=not train)  # (B, S, E)
    memory, states = self.encoder(x, jnp.sum(inputs > 0, -1), deterministic=not train)  # (B, S, He)
    init = []
    for i in range(cfg.num_decoder_layers):
      directions = states[min(i, cfg.num_layers - 1)]  # deeper decoders reuse the top encoder layer
      if cfg.bidirectional:
        c, h = (jnp.concatenate([d[k] for d in directions], -1) for k in (0, 1))  # (B, 2H)
        init.append((self.bridge_c[i](c).astype(jnp.float32),
                     jnp.tanh(self.bridge_h[i](h)).astype(jnp.float32)))
      else:
        init.append(directions[0])
    keys = self.attention_keys(memory) if cfg.attention in ('bahdanau', 'luong_general') else memory
    return dict(memory=memory, keys=keys, **stack_states(tuple(init)))

  def _decode(self, encoded, inputs, carry, decoder_inputs, *, train: bool):
    """Runs the decoder cell over decoder_inputs (B, T) from `carry`. Returns (carry, logits)."""
    y = self.dropout(self.target_embed(decoder_inputs), deterministic=not train)  # (B, T, E)
    carry, (out, weights) = self.decoder(carry, y, encoded['memory'], encoded['keys'], inputs > 0,
                                         not train)  # out: (B, T, H); weights: (B, T, S)
    if self.config.attention != 'none':
      self.sow('intermediates', 'attention_weights', weights)
    tied = self.target_embed if self.config.tie_output else None
    return carry, self.output(out, tied, deterministic=not train)

  def _initial_carry(self, encoded):
    feed = jnp.zeros(encoded['c'].shape[:1] + (self.config.hidden_dim,), jnp.float32)  # (B, H)
    return unstack_states({'c': encoded['c'], 'h': encoded['h']}), feed

  def __call__(self, batch, *, train: bool):
    """Teacher-forced logits (B, T, V) for batch['inputs'] → batch['targets']."""
    check_no_packing(batch, 'lstm')
    inputs, targets = batch['inputs'], batch['targets']
    encoded = self.encode(inputs, train=train)
    _, logits = self._decode(encoded, inputs, self._initial_carry(encoded),
                             layers.shift_right(targets), train=train)
    return logits

  def decode_step(self, encoded, inputs, token, position, *, max_length: int, beam_size: int = 1):
    """One decoding step; the (c, h) states and feed vector live in the 'cache'.

    Args:
      encoded: output of `encode`.
      inputs: (B, S) source ids.
      token: (B,) int32 previous token (0 at position 0).
      position: scalar int32 step.
      max_length: unused (the state does not grow).

    Returns:
      (B, V) float32 logits.
    """
    del max_length
    state = self.cache(self._initial_carry(encoded), position)
    state, logits = self._decode(encoded, inputs, state, token[:, None], train=False)
    self.cache(state, position, new=state)
    return logits[:, 0]


class LSTMLanguageModel(nn.Module):
  """Multi-layer LSTM language model (kind = 'decoder') with stateful TBPTT.

  The carried state is {'c', 'h': (B, L, H), 'token': (B,)}: the LSTM states
  after a chunk and the chunk's last target, which is the first input of the
  next chunk. With `zero_state` the input is exactly shift_right(targets), so
  consecutive chunks of a stream reproduce one pass over the whole stream.
  """
  config: LSTMConfig

  def setup(self):
    cfg = self.config
    dt = cfg.jnp_dtype
    check_encoder_only_fields(cfg)
    check(cfg.target_vocab_size > 0, 'target_vocab_size', 'must be > 0 (passed by the trainer)')
    self.embed = layers.Embed(cfg.target_vocab_size, cfg.emb_dim, dt, init='lstm')
    self.dropout = layers.Dropout(cfg.dropout_rate)
    self.lstm = LSTMStack(cfg.hidden_dim, cfg.num_layers, cfg.dropout_rate, False, dt)
    self.output = OutputLayer(cfg)
    self.cache = StateCache()

  @nn.nowrap
  def zero_state(self, batch_size: int) -> dict:
    """Initial TBPTT state for `batch_size` rows (no parameters needed).

    Returns:
      {'c', 'h': (B, L, H) float32 zeros, 'token': (B,) int32 BOS}.
    """
    cfg = self.config
    zeros = jnp.zeros((batch_size, cfg.num_layers, cfg.hidden_dim), jnp.float32)
    return {'c': zeros, 'h': zeros, 'token': jnp.zeros((batch_size,), jnp.int32)}

  def _run(self, decoder_inputs, state, *, train: bool):
    """Inputs (B, T) from LSTM states `state` → (logits (B, T, V), new stacked states)."""
    x = self.dropout(self.embed(decoder_inputs), deterministic=not train)  # (B, T, E)
    initial = tuple((s,) for s in unstack_states(state))
    x, final = self.lstm(x, None, initial, deterministic=not train)  # (B, T, H)
    tied = self.embed if self.config.tie_output else None
    logits = self.output(x, tied, deterministic=not train)
    return logits, stack_states(tuple(s[0] for s in final))

  def apply_with_state(self, batch, initial_state, *, train: bool):
    """Logits and the state to carry into the next chunk (truncated BPTT).

    Args:
      batch: {'targets': (B, T)} one chunk of each row's stream, no padding.
      initial_state: `zero_state(B)` or the state returned for the previous chunk.
      train: enables dropout.

    Returns:
      (logits (B, T, V), final_state); gradients never flow into initial_state.
    """
    check_no_packing(batch, 'lstm')
    targets = batch['targets']
    initial_state = jax.lax.stop_gradient(initial_state)  # truncation point of BPTT
    decoder_inputs = jnp.concatenate([initial_state['token'][:, None], targets[:, :-1]], 1)  # (B, T)
    logits, states = self._run(decoder_inputs, initial_state, train=train)
    return logits, dict(states, token=targets[:, -1])

  def __call__(self, batch, *, train: bool, initial_state: Optional[dict] = None):
    """Next-token logits (B, T, V) for batch['targets'], from `initial_state` or zeros."""
    if initial_state is None:
      initial_state = self.zero_state(batch['targets'].shape[0])
    return self.apply_with_state(batch, initial_state, train=train)[0]

  def encode(self, inputs, *, train: bool = False):
    """Decoder-only models have no encoder. Returns None."""
    del inputs, train
    return None

  def decode_step(self, encoded, inputs, token, position, *, max_length: int, beam_size: int = 1):
    """One step; per-layer (c, h) live in the 'cache'. Args: token (B,). Returns (B, V)."""
    del encoded, inputs, max_length
    zero = self.zero_state(token.shape[0])
    state = self.cache({'c': zero['c'], 'h': zero['h']}, position)
    logits, state = self._run(token[:, None], state, train=False)
    self.cache(state, position, new=state)
    return logits[:, 0]
