"""Transformer encoder-decoder, decoder-only LM and encoder (Vaswani et al., 2017)."""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import platforms
from lmjax.models import attention
from lmjax.models import attention_impls
from lmjax.models import layers
from lmjax.models import relative_position


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerCoreConfig:
  """The hyperparameters every Transformer has (values come from `config.model`).

  Attributes:
    vocab_size: source (or only) vocabulary size.
    emb_dim: model width D.
    num_heads: attention heads H.
    qkv_dim: total query/key/value width (H * head_dim).
    mlp_dim: feed-forward width F.
    num_encoder_layers: encoder depth.
    max_len: longest sequence (positions table size).
    dropout_rate: residual/embedding dropout.
    attention_dropout_rate: attention-weight dropout.
    pre_ln: pre-LayerNorm (True) or post-LayerNorm (False, original paper).
    position: 'sinusoidal' or 'learned' (added to the embeddings), or 'relative' (T5's
      bucketed relative position bias on the self-attention scores, one per stack:
      lmjax/models/relative_position.py).
    dtype: computation dtype ('float32', 'bfloat16' or 'auto': see
      `lmjax.platforms.resolve_dtype`); params stay float32.
    scan_layers: stack each layer stack with `nn.scan` (params get a leading 'layers'
      axis; compile time stays flat with depth). See `unstacked_to_scanned`.
    remat_policy: rematerialise each layer in the backward pass: 'none', 'full'
      (save nothing), 'dots_saveable' or 'dots_with_no_batch_dims_saveable'
      (keep matmul outputs, recompute the rest).
    mlp_activation: 'relu' (Vaswani et al.), 'gelu' (exact, as nanoGPT) or 'gelu_tanh'.
    init: 'xavier' (Glorot kernels, sqrt(D)-scaled embeddings; Vaswani et al., flax) or
      'gpt2' (N(0, 0.02) everywhere, residual output projections scaled by
      1/sqrt(2 * depth), unscaled embeddings; GPT-2, nanoGPT). See `layers.kernel_init`.
    use_bias: biases in the attention/MLP projections, the LayerNorms and untied
      logits; False drops them all (nanoGPT's default, T5).
    matmul_dtype: '' (the computation dtype) or 'bfloat16': the projections and logits
      multiply bfloat16-rounded operands into float32 results, forward and backward
      (`layers.bf16_dot_general`); ~2x faster matmuls on CPUs with AVX-512 BF16.
    attention_impl: 'auto', 'reference', 'xla', 'cudnn' or 'splash' (see
      lmjax/models/attention_impls.py); decoding steps always run 'reference'.
    norm: 'layernorm' or 'rmsnorm' (scale only, no centring; T5), `layers.NORMS`.
    norm_epsilon: the norms' epsilon (1e-6 as flax and T5; BERT 1e-12, GPT-2 1e-5).
    relative_buckets: distance buckets of position='relative' (T5: 32).
    relative_max_distance: where the buckets saturate (T5: 128).
    scale_attention: divide attention scores by sqrt(head_dim) (False: T5).
    embed_scale: multiply embedding rows by sqrt(D): 'init' (only with init='xavier'),
      'sqrt_dim' or 'none' (`layers.EMBED_SCALES`).
    type_vocab_size: rows of a learned token-type table whose row 0 is added at every
      position (BERT's `token_type_embeddings`, single segment); 0 = none.
    embed_norm: a norm (`norm`, `norm_epsilon`) on the embedded tokens, after positions
      and token types, before the first layer (BERT's `embeddings.LayerNorm`).
  """
  vocab_size: int
  emb_dim: int
  num_heads: int
  qkv_dim: int
  mlp_dim: int
  num_encoder_layers: int
  max_len: int
  dropout_rate: float
  attention_dropout_rate: float
  pre_ln: bool
  position: str
  dtype: Any = 'float32'
  scan_layers: bool = False
  remat_policy: str = 'none'
  mlp_activation: str = 'relu'
  init: str = 'xavier'
  use_bias: bool = True
  matmul_dtype: str = ''
  attention_impl: str = 'reference'
  norm: str = 'layernorm'
  norm_epsilon: float = 1e-6
  relative_buckets: int = 32
  relative_max_distance: int = 128
  scale_attention: bool = True
  embed_scale: str = 'init'
  type_vocab_size: int = 0
  embed_norm: bool = False

  @property
  def jnp_dtype(self):
    return jnp.dtype(platforms.resolve_dtype(self.dtype))


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerConfig(TransformerCoreConfig):
  """Encoder-decoder and decoder-only Transformers: the core fields plus the decoder's.

  Attributes:
    target_vocab_size: target vocabulary size (encdec).
    share_embeddings: one embedding table for source and target (needs equal vocabs).
    tie_output: output logits through the target embedding matrix.
    num_decoder_layers: decoder depth.
    scale_tied_logits: multiply the decoder output by D^-0.5 before tied logits (T5 v1.0,
      whose embeddings are not scaled on the way in).
  """
  target_vocab_size: int
  share_embeddings: bool
  tie_output: bool
  num_decoder_layers: int
  scale_tied_logits: bool = False


# config.model.remat_policy → jax.checkpoint policy (None = save nothing, recompute all).
REMAT_POLICIES = {
    'full': None,
    'dots_saveable': jax.checkpoint_policies.dots_saveable,
    'dots_with_no_batch_dims_saveable': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Block(nn.Module):
  """One encoder or decoder layer: self-attention [+ cross-attention] + MLP.

  Pre-LN: x + f(LN(x)); post-LN: LN(x + f(x)).

  Attributes:
    config: hyperparameters.
    causal: unused by the block itself (the mask carries causality); names the stack.
    cross: add cross-attention to `encoded`.
    deterministic: disables dropout.
    decode: one-token step with the 'cache' collection.
    max_length: decode cache length.
    beam_size: K > 1 when decoding K beams per sentence (rows b*K + k).
    scanned: return (x, None), the carry/output pair `nn.scan` expects.
  """
  config: TransformerCoreConfig  # (a TransformerConfig in a decoder)
  causal: bool
  cross: bool
  deterministic: bool = True
  decode: bool = False
  max_length: int = 0
  beam_size: int = 1
  scanned: bool = False

  @nn.compact
  def __call__(self, x, mask, encoded=None, cross_mask=None, position=None, bias=None):
    """Args: x (B, L, D); mask, cross_mask: `attention_impls.AttentionMask` (L → L, L → S)
    or None; encoded (B, S, D); position: scalar int32 when decoding; bias: the stack's
    relative position bias for the self-attention (see `MultiHeadAttention`) or None.

    Returns: (B, L, D), or ((B, L, D), None) when `scanned`.
    """
    cfg = self.config
    deterministic, decode, max_length = self.deterministic, self.decode, self.max_length
    dt = cfg.jnp_dtype
    drop = layers.Dropout(cfg.dropout_rate)
    depth = cfg.num_decoder_layers if self.causal else cfg.num_encoder_layers
    init = dict(init=cfg.init, residual_layers=depth, use_bias=cfg.use_bias,
                matmul_dtype=cfg.matmul_dtype)

    def sublayer(name, fn, h):
      ln = layers.layer_norm(name=f'{name}_ln', dtype=dt, use_bias=cfg.use_bias, kind=cfg.norm,
                             epsilon=cfg.norm_epsilon)
      if cfg.pre_ln:
        return h + drop(fn(ln(h)), deterministic=deterministic)
      return ln(h + drop(fn(h), deterministic=deterministic))

    def self_attn(h):
      return attention.MultiHeadAttention(
          cfg.num_heads, cfg.qkv_dim, cfg.attention_dropout_rate, dt, name='self_attention',
          attention_impl=cfg.attention_impl, scale_scores=cfg.scale_attention, **init)(
              h, h, mask, deterministic=deterministic, decode='self' if decode else '',
              position=position, max_length=max_length, beam_size=self.beam_size, bias=bias)

    x = sublayer('self_attention', self_attn, x)
    if self.cross:
      def cross_attn(h):
        return attention.MultiHeadAttention(
            cfg.num_heads, cfg.qkv_dim, cfg.attention_dropout_rate, dt, name='cross_attention',
            attention_impl=cfg.attention_impl, scale_scores=cfg.scale_attention, **init)(
                h, encoded, cross_mask, deterministic=deterministic,
                decode='cross' if decode else '', position=position)
      x = sublayer('cross_attention', cross_attn, x)
    mlp = layers.Mlp(cfg.mlp_dim, cfg.dropout_rate, dt, cfg.mlp_activation, name='mlp', **init)
    x = sublayer('mlp', lambda h: mlp(h, deterministic=deterministic), x)
    x = nn.with_logical_constraint(
        x, ('activation_batch', 'activation_length', 'activation_embed'))
    return (x, None) if self.scanned else x


def layer_stack(x, cfg: TransformerCoreConfig, num_layers: int, mask, encoded=None, cross_mask=None,
                position=None, bias=None, **block_kwargs):
  """Applies `num_layers` Blocks, unrolled (`layer_{i}`) or scanned (`layers`).

  Must be called inside a compact method: the blocks are children of the caller.
  Scanned params and decode caches get a 'layers' axis (axis 0 for params; axis 1
  for the cache, so that its leading axis stays the batch, as beam search needs).

  Args:
    x: (B, L, D) input.
    cfg: hyperparameters (reads scan_layers, remat_policy).
    num_layers: depth.
    mask, encoded, cross_mask, position, bias: passed to every block.
    **block_kwargs: Block attributes (causal, cross, deterministic, decode, max_length).

  Returns:
    (B, L, D) output.
  """
  if cfg.remat_policy not in ('none', *REMAT_POLICIES):
    raise ValueError(f"config.model.remat_policy={cfg.remat_policy!r}: expected 'none' or one "
                     f'of {sorted(REMAT_POLICIES)}')
  block_cls = Block
  if cfg.remat_policy != 'none':
    # Inside scan, CSE cannot merge the recomputation into the forward pass anyway.
    block_cls = nn.remat(Block, policy=REMAT_POLICIES[cfg.remat_policy],
                         prevent_cse=not cfg.scan_layers)
  if not cfg.scan_layers:
    for i in range(num_layers):
      x = block_cls(cfg, name=f'layer_{i}', **block_kwargs)(x, mask, encoded, cross_mask,
                                                            position, bias)
    return x
  if num_layers == 0:
    return x
  scanned = nn.scan(block_cls, variable_axes={'params': 0, 'cache': 1, 'cross_cache': 1},
                    split_rngs={'params': True, 'dropout': True},
                    in_axes=(nn.broadcast,) * 5, length=num_layers,
                    metadata_params={nn.PARTITION_NAME: 'layers'})
  x, _ = scanned(cfg, scanned=True, name='layers', **block_kwargs)(
      x, mask, encoded, cross_mask, position, bias)
  return x


def positions_or_bias(cfg: TransformerCoreConfig, x, positions, *, causal: bool,
                      decode_position=None, max_length: int = 0):
  """Adds absolute position embeddings to x, or makes the stack's relative position bias.

  Must be called inside the stack's compact method ('pos' or 'relpos' become its children).

  Args:
    cfg: hyperparameters (reads position, max_len, num_heads, relative_*).
    x: (B, L, D) embedded tokens.
    positions: (B, L) int32 positions (within packed segments), or None for 0..L-1.
    causal: the decoder's bias (keys after the query share no bucket) or the encoder's.
    decode_position: scalar int32 position of the one new token when decoding, else None.
    max_length: the decode cache length (decoding only).

  Returns:
    (x, bias): x with absolute positions added (unchanged for 'relative'), and the
    (B|1, H, Lq, Lk) bias ((1, H, 1, max_length) when decoding) or None.
  """
  if cfg.position != 'relative':
    return layers.PositionEmbedding(cfg.position, cfg.max_len, name='pos')(x, positions), None
  if decode_position is not None:
    q_positions = jnp.reshape(decode_position, (1, 1))
    k_positions = jnp.arange(max_length)[None, :]
  else:
    q_positions = k_positions = (jnp.arange(x.shape[1])[None, :] if positions is None
                                 else positions)
  bias = relative_position.RelativePositionBias(
      cfg.num_heads, cfg.relative_buckets, cfg.relative_max_distance, bidirectional=not causal,
      init_std=cfg.emb_dim ** -0.5, name='relpos')(q_positions, k_positions)
  return x, bias


def embedding_extras(cfg: TransformerCoreConfig, x):
  """Adds the token-type row and applies the embedding norm, where the config has them.

  Must be called inside the stack's compact method ('type_embed' and 'embed_ln' become
  its children), after `positions_or_bias` and before the embedding dropout (BERT's order).

  Args:
    cfg: hyperparameters (reads type_vocab_size, embed_norm, norm, norm_epsilon, use_bias).
    x: (B, L, D) embedded tokens with their positions.

  Returns:
    (B, L, D); x itself when both options are off.
  """
  if cfg.type_vocab_size:
    x = layers.TypeEmbedding(cfg.type_vocab_size, name='type_embed')(x)
  if cfg.embed_norm:
    x = layers.layer_norm(name='embed_ln', dtype=cfg.jnp_dtype, use_bias=cfg.use_bias,
                          kind=cfg.norm, epsilon=cfg.norm_epsilon)(x)
  return x


def unstacked_to_scanned(params):
  """Converts unrolled-stack params (`layer_0`, `layer_1`, …) to the scanned layout.

  Every dict holding `layer_{i}` children gets one `layers` child whose leaves are
  the layers' leaves stacked on a new leading axis; everything else is unchanged.

  Args:
    params: (unboxed) params of a model built with scan_layers=False.

  Returns:
    The params of the same model built with scan_layers=True.
  """
  if not isinstance(params, dict) and not hasattr(params, 'items'):
    return params
  out, layer_keys = {}, sorted((k for k in params if k.startswith('layer_') and k[6:].isdigit()),
                               key=lambda k: int(k[6:]))
  for k, v in params.items():
    if k not in layer_keys:
      out[k] = unstacked_to_scanned(v)
  if layer_keys:
    out['layers'] = jax.tree.map(lambda *xs: jnp.stack(xs), *[params[k] for k in layer_keys])
  return out


def scanned_to_unstacked(params):
  """Inverse of `unstacked_to_scanned`: splits every `layers` child into `layer_{i}`."""
  if not isinstance(params, dict) and not hasattr(params, 'items'):
    return params
  out = {}
  for k, v in params.items():
    if k == 'layers':
      n = jax.tree.leaves(v)[0].shape[0]
      for i in range(n):
        out[f'layer_{i}'] = jax.tree.map(lambda x, i=i: x[i], v)
    else:
      out[k] = scanned_to_unstacked(v)
  return out


class Encoder(nn.Module):
  """Stack of bidirectional self-attention blocks."""
  config: TransformerCoreConfig
  embed: nn.Module

  @nn.compact
  def __call__(self, inputs, segmentation=None, positions=None, *, deterministic: bool):
    """Args: inputs (B, S) int32; segmentation/positions (B, S) or None. Returns (B, S, D)."""
    cfg = self.config
    x = self.embed(inputs)  # (B, S, D)
    x, bias = positions_or_bias(cfg, x, positions, causal=False)
    x = embedding_extras(cfg, x)
    x = layers.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
    valid = inputs > 0
    mask = attention_impls.AttentionMask(valid, valid, segmentation, segmentation)
    x = layer_stack(x, cfg, cfg.num_encoder_layers, mask, bias=bias, causal=False, cross=False,
                    deterministic=deterministic)
    if cfg.pre_ln:
      x = layers.layer_norm(name='final_ln', dtype=cfg.jnp_dtype, use_bias=cfg.use_bias,
                            kind=cfg.norm, epsilon=cfg.norm_epsilon)(x)
    return x


class Decoder(nn.Module):
  """Stack of causal blocks, with cross-attention when `cross` is set."""
  config: TransformerConfig
  embed: nn.Module
  cross: bool

  @nn.compact
  def __call__(self, decoder_inputs, encoded=None, cross_mask=None, segmentation=None,
               positions=None, *, deterministic: bool, decode: bool = False,
               position=None, max_length: int = 0, beam_size: int = 1):
    """Runs the decoder over a whole sequence, or over one token when `decode`.

    Args:
      decoder_inputs: (B, T) int32 shifted targets, or (B, 1) when decoding.
      encoded: (B, S, D) encoder output (encdec) or None.
      cross_mask: `attention_impls.AttentionMask` (T → S) or None.
      segmentation: (B, T) segment ids when packed.
      positions: (B, T) positions when packed.
      deterministic: disables dropout.
      decode: one-token step using the 'cache' collection.
      position: scalar int32 step index when decoding.
      max_length: cache length when decoding.
      beam_size: beams per sentence when decoding (rows b*K + k).

    Returns:
      (B, T, V) logits.
    """
    cfg = self.config
    x = self.embed(decoder_inputs)  # (B, T, D)
    if decode:
      positions = jnp.full(decoder_inputs.shape, position)
      mask = None
    else:
      valid = jnp.ones_like(decoder_inputs, dtype=bool)  # pads only follow real tokens
      mask = attention_impls.AttentionMask(valid, valid, segmentation, segmentation, causal=True)
    x, bias = positions_or_bias(cfg, x, positions, causal=True,
                                decode_position=position if decode else None,
                                max_length=max_length)
    x = embedding_extras(cfg, x)
    x = layers.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
    x = layer_stack(x, cfg, cfg.num_decoder_layers, mask, encoded, cross_mask, position, bias,
                    causal=True, cross=self.cross, deterministic=deterministic, decode=decode,
                    max_length=max_length, beam_size=beam_size)
    if cfg.pre_ln:
      x = layers.layer_norm(name='final_ln', dtype=cfg.jnp_dtype, use_bias=cfg.use_bias,
                            kind=cfg.norm, epsilon=cfg.norm_epsilon)(x)
    if cfg.tie_output:
      if cfg.scale_tied_logits:
        x = x * jnp.asarray(cfg.emb_dim ** -0.5, x.dtype)
      logits = self.embed.attend(x, deterministic)
    else:
      logits = layers.dense(cfg.target_vocab_size, ('embed', 'vocab'), cfg.jnp_dtype,
                            name='logits', init=layers.kernel_init(cfg.init),
                            use_bias=cfg.use_bias, dot_general=layers.matmul_fn(cfg.matmul_dtype))(x)
    return nn.with_logical_constraint(
        logits.astype(jnp.float32), ('activation_batch', 'activation_length', 'activation_vocab'))


class EncoderDecoder(nn.Module):
  """Sequence-to-sequence Transformer (kind = 'encdec')."""
  config: TransformerConfig

  def setup(self):
    cfg = self.config
    dt = cfg.jnp_dtype
    if cfg.share_embeddings and cfg.vocab_size != cfg.target_vocab_size:
      raise ValueError('config.model.share_embeddings=True needs equal source and target '
                       f'vocab sizes, got {cfg.vocab_size} and {cfg.target_vocab_size}')
    self.source_embed = layers.Embed(cfg.vocab_size, cfg.emb_dim, dt, cfg.init, cfg.matmul_dtype,
                                     cfg.embed_scale)
    self.target_embed = (self.source_embed if cfg.share_embeddings
                         else layers.Embed(cfg.target_vocab_size, cfg.emb_dim, dt, cfg.init,
                                           cfg.matmul_dtype, cfg.embed_scale))
    self.encoder = Encoder(cfg, self.source_embed)
    self.decoder = Decoder(cfg, self.target_embed, cross=True)

  def encode(self, inputs, segmentation=None, positions=None, *, train: bool = False):
    """Args: inputs (B, S) int32. Returns encoded (B, S, D)."""
    return self.encoder(inputs, segmentation, positions, deterministic=not train)

  def __call__(self, batch, *, train: bool):
    """Teacher-forced logits (B, T, V) for batch['inputs'] → batch['targets']."""
    inputs, targets = batch['inputs'], batch['targets']
    in_seg, tgt_seg = batch.get('inputs_segmentation'), batch.get('targets_segmentation')
    encoded = self.encode(inputs, in_seg, batch.get('inputs_position'), train=train)
    cross_mask = attention_impls.AttentionMask(jnp.ones_like(targets, dtype=bool), inputs > 0,
                                               tgt_seg, in_seg)
    return self.decoder(layers.shift_right(targets, tgt_seg), encoded, cross_mask, tgt_seg,
                        batch.get('targets_position'), deterministic=not train)

  def decode_step(self, encoded, inputs, token, position, *, max_length: int, beam_size: int = 1):
    """One decoding step. Args: encoded (B, S, D); inputs (B, S); token (B,). Returns (B, V)."""
    cross_mask = attention_impls.AttentionMask(jnp.ones_like(token, bool)[:, None], inputs > 0)
    logits = self.decoder(token[:, None], encoded, cross_mask, deterministic=True, decode=True,
                          position=position, max_length=max_length, beam_size=beam_size)
    return logits[:, 0]


class DecoderOnly(nn.Module):
  """Causal language model (kind = 'decoder')."""
  config: TransformerConfig

  def setup(self):
    cfg = self.config
    self.embed = layers.Embed(cfg.target_vocab_size, cfg.emb_dim, cfg.jnp_dtype, cfg.init,
                              cfg.matmul_dtype, cfg.embed_scale)
    self.decoder = Decoder(self.config, self.embed, cross=False)

  def encode(self, inputs, *, train: bool = False):
    """Decoder-only models have no encoder. Returns None."""
    del inputs, train
    return None

  def __call__(self, batch, *, train: bool):
    """Next-token logits (B, T, V) for batch['targets'] (after batch['decoder_inputs'] if given)."""
    targets, seg = batch['targets'], batch.get('targets_segmentation')
    inputs = batch.get('decoder_inputs')  # (B, T) the tokens before the targets
    if inputs is None:
      inputs = layers.shift_right(targets, seg)
    return self.decoder(inputs, segmentation=seg,
                        positions=batch.get('targets_position'), deterministic=not train)

  def decode_step(self, encoded, inputs, token, position, *, max_length: int, beam_size: int = 1):
    """One step. Args: token (B,) previous token. Returns (B, V) logits."""
    del encoded, inputs
    return self.decoder(token[:, None], deterministic=True, decode=True, position=position,
                        max_length=max_length, beam_size=beam_size)[:, 0]
