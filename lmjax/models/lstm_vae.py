"""LSTM sentence variational autoencoder (family 'lstm', kind 'vae').

An LSTM encoder reads the sentence; its final state gives a diagonal Gaussian
posterior q(z|x) = N(mean, exp(logvar)); a sample z = mean + exp(logvar / 2)·ε sets
the decoder LSTM's initial states (and, with `latent_every_step`, is concatenated to
every decoder input). The decoder is teacher-forced on shift_right(targets), with
Bowman's word dropout replacing decoder inputs by <unk>. The objective (ELBO, KL
annealing, free bits) lives in `lmjax.objectives.vae`; the annealing and
free-bits fields are kept here so that one `config.model` section describes the run.

References:
  Bowman et al. (2016), Generating sentences from a continuous space.
  Kingma et al. (2016), Improved variational inference with inverse autoregressive flow.
  Fu et al. (2019), Cyclical annealing schedule: a simple approach to mitigating KL vanishing.
"""

import dataclasses
from typing import Any, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import platforms
from lmjax.models import layers
from lmjax.models import lstm

KL_SCHEDULES = ('constant', 'linear', 'cyclical')
UNK_ID = 2  # lmjax.data.tokenizers.UNK_ID (models do not import data; CONTRACT.md)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """LSTM VAE hyperparameters (values come from `config.model`).

  Attributes:
    emb_dim: embedding width E (one table for encoder and decoder).
    hidden_dim: LSTM width H (encoder per direction, decoder).
    num_layers: encoder and decoder depth.
    latent_dim: latent width Z.
    dropout_rate: dropout on embeddings, between layers and before the output layer.
    bidirectional: bidirectional encoder.
    latent_every_step: concatenate z to every decoder input (else only the initial state).
    decoder_word_dropout: probability of replacing a decoder input word by <unk> in training.
    tie_output: output logits through the embedding matrix.
    kl_schedule: 'constant' (weight 1), 'linear' or 'cyclical' KL annealing.
    kl_warmup_steps: 'linear': steps over which the KL weight rises from 0 to 1.
    kl_cycle_steps: 'cyclical': steps per cycle.
    kl_cycle_ratio: 'cyclical': fraction of each cycle over which the weight rises to 1.
    free_bits: nats per latent unit below which the batch-mean KL is not penalised (0 = off).
    vocab_size, target_vocab_size: vocabulary size; set by the trainer.
    dtype: computation dtype; params and states stay float32.
  """
  emb_dim: int
  hidden_dim: int
  num_layers: int
  latent_dim: int
  dropout_rate: float
  bidirectional: bool
  latent_every_step: bool
  decoder_word_dropout: float
  tie_output: bool
  kl_schedule: str
  kl_warmup_steps: int
  kl_cycle_steps: int
  kl_cycle_ratio: float
  free_bits: float
  vocab_size: int = 0
  target_vocab_size: int = 0
  dtype: Any = 'float32'

  @property
  def jnp_dtype(self):
    return jnp.dtype(platforms.resolve_dtype(self.dtype))


def check_config(cfg: VAEConfig) -> None:
  """Raises ValueError naming the config.model field that is out of range."""
  lstm.check(cfg.target_vocab_size > 0, 'target_vocab_size', 'must be > 0 (passed by the trainer)')
  lstm.check(cfg.latent_dim > 0, 'latent_dim', f'must be > 0, got {cfg.latent_dim}')
  lstm.check(cfg.kl_schedule in KL_SCHEDULES, 'kl_schedule',
             f'must be one of {KL_SCHEDULES}, got {cfg.kl_schedule!r}')
  lstm.check(cfg.kl_schedule != 'linear' or cfg.kl_warmup_steps >= 0, 'kl_warmup_steps',
             f'must be >= 0 (0 = weight 1 from the start), got {cfg.kl_warmup_steps}')
  lstm.check(cfg.kl_schedule != 'cyclical' or cfg.kl_cycle_steps > 0, 'kl_cycle_steps',
             f"must be > 0 with kl_schedule='cyclical', got {cfg.kl_cycle_steps}")
  lstm.check(0.0 < cfg.kl_cycle_ratio <= 1.0, 'kl_cycle_ratio',
             f'must be in (0, 1], got {cfg.kl_cycle_ratio}')
  lstm.check(0.0 <= cfg.decoder_word_dropout <= 1.0, 'decoder_word_dropout',
             f'must be in [0, 1], got {cfg.decoder_word_dropout}')
  lstm.check(cfg.free_bits >= 0.0, 'free_bits', f'must be >= 0 (0 = off), got {cfg.free_bits}')


class LSTMVAE(nn.Module):
  """Bowman et al.'s sentence VAE (kind = 'vae') on an LM batch {'targets': (B, T)}."""
  config: VAEConfig

  def setup(self):
    cfg = self.config
    dt = cfg.jnp_dtype
    check_config(cfg)
    self.embed = layers.Embed(cfg.target_vocab_size, cfg.emb_dim, dt, init='lstm')
    self.dropout = layers.Dropout(cfg.dropout_rate)
    self.encoder = lstm.LSTMStack(cfg.hidden_dim, cfg.num_layers, cfg.dropout_rate,
                                  cfg.bidirectional, dt)
    self.to_mean = layers.dense(cfg.latent_dim, ('hidden_in', 'hidden'), dt)
    self.to_logvar = layers.dense(cfg.latent_dim, ('hidden_in', 'hidden'), dt)
    # z → every decoder layer's initial (c, h).
    self.to_state = layers.dense(2 * cfg.num_layers * cfg.hidden_dim, ('hidden_in', 'hidden'), dt)
    self.decoder = lstm.LSTMStack(cfg.hidden_dim, cfg.num_layers, cfg.dropout_rate, False, dt)
    self.output = lstm.OutputLayer(cfg)
    self.cache = lstm.StateCache()

  def posterior(self, tokens, *, train: bool = False) -> Dict[str, jnp.ndarray]:
    """q(z|x) of right-padded sentences.

    Args:
      tokens: (B, T) int32 ids, 0 = padding (the targets, EOS included).
      train: enables dropout.

    Returns:
      {'mean', 'logvar'}: (B, Z) float32 each.
    """
    x = self.dropout(self.embed(tokens), deterministic=not train)  # (B, T, E)
    _, states = self.encoder(x, jnp.sum(tokens > 0, -1), deterministic=not train)
    h = jnp.concatenate([d[1] for d in states[-1]], -1)  # top layer's final h: (B, D·H)
    return {'mean': self.to_mean(h).astype(jnp.float32),
            'logvar': self.to_logvar(h).astype(jnp.float32)}

  def initial_states(self, z) -> Dict[str, jnp.ndarray]:
    """Decoder states from z (B, Z): {'c', 'h': (B, L, H)}."""
    cfg = self.config
    s = jnp.tanh(self.to_state(z)).astype(jnp.float32)  # (B, 2·L·H)
    s = s.reshape(z.shape[0], 2, cfg.num_layers, cfg.hidden_dim)
    return {'c': s[:, 0], 'h': s[:, 1]}

  def _decode(self, z, decoder_inputs, states, *, train: bool):
    """Decoder over inputs (B, T) from stacked states. Returns (logits (B, T, V), states)."""
    cfg = self.config
    x = self.dropout(self.embed(decoder_inputs), deterministic=not train)  # (B, T, E)
    if cfg.latent_every_step:
      zt = jnp.broadcast_to(z[:, None].astype(x.dtype), x.shape[:2] + z.shape[-1:])
      x = jnp.concatenate([x, zt], -1)  # (B, T, E + Z)
    initial = tuple((s,) for s in lstm.unstack_states(states))
    x, final = self.decoder(x, None, initial, deterministic=not train)  # (B, T, H)
    tied = self.embed if cfg.tie_output else None
    return self.output(x, tied, deterministic=not train), lstm.stack_states(tuple(s[0] for s in final))

  def word_dropout(self, decoder_inputs, *, train: bool):
    """Bowman's word dropout: real decoder inputs become <unk> with probability p."""
    p = self.config.decoder_word_dropout
    if not train or p == 0.0:
      return decoder_inputs
    drop = jax.random.bernoulli(self.make_rng('dropout'), p, decoder_inputs.shape)
    return jnp.where(drop & (decoder_inputs > 0), UNK_ID, decoder_inputs)

  def reconstruct(self, z, targets, *, train: bool):
    """Teacher-forced logits (B, T, V) of `targets` given latents z (B, Z)."""
    inputs = self.word_dropout(layers.shift_right(targets), train=train)
    return self._decode(z, inputs, self.initial_states(z), train=train)[0]

  def vae_outputs(self, batch, noise, *, train: bool) -> Dict[str, jnp.ndarray]:
    """Posterior, reparameterised sample and reconstruction logits.

    Args:
      batch: {'targets': (B, T)}.
      noise: (B, Z) standard-normal ε (zeros = decode the posterior mean).
      train: enables dropout and word dropout.

    Returns:
      {'mean', 'logvar', 'z': (B, Z), 'logits': (B, T, V)}.
    """
    lstm.check_no_packing(batch, 'lstm')
    targets = batch['targets']
    q = self.posterior(targets, train=train)
    z = q['mean'] + jnp.exp(0.5 * q['logvar']) * noise  # (B, Z)
    return dict(q, z=z, logits=self.reconstruct(z, targets, train=train))

  def __call__(self, batch, *, train: bool):
    """Reconstruction logits (B, T, V) from the posterior mean (no sampling)."""
    noise = jnp.zeros((batch['targets'].shape[0], self.config.latent_dim), jnp.float32)
    return self.vae_outputs(batch, noise, train=train)['logits']

  def encode(self, inputs, *, train: bool = False):
    """Latents to decode from: the posterior mean of sentences `inputs` (B, T). Returns (B, Z)."""
    return self.posterior(inputs, train=train)['mean']

  def decode_step(self, encoded, inputs, token, position, *, max_length: int, beam_size: int = 1):
    """One decoding step from latents `encoded` (B, Z); states live in the 'cache'.

    Returns:
      (B, V) float32 logits.
    """
    del inputs, max_length, beam_size
    states = self.cache(self.initial_states(encoded), position)
    logits, states = self._decode(encoded, token[:, None], states, train=False)
    self.cache(states, position, new=states)
    return logits[:, 0]
