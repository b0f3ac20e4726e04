"""The sentence-VAE sections shared by the VAE config files: every field commented once, here.

A config file sets `c.model = vae_section.lstm_vae(…)` and `vae_section.set_eval(c, …)`,
passing only the values it changes.
"""

import ml_collections


def lstm_vae(**values) -> ml_collections.ConfigDict:
  """`config.model` for the LSTM VAE (lmjax.models.lstm_vae.VAEConfig); `values` override."""
  m = ml_collections.ConfigDict()
  # Model family and kind (Bowman et al., 2016 sentence VAE).
  m.family = 'lstm'
  m.kind = 'vae'
  # Embedding width (one table for encoder and decoder).
  m.emb_dim = 128
  # LSTM width (encoder per direction, decoder).
  m.hidden_dim = 256
  # Encoder and decoder depth.
  m.num_layers = 1
  # Latent width Z.
  m.latent_dim = 16
  # Dropout on embeddings, between layers and before the output.
  m.dropout_rate = 0.0
  # Bidirectional encoder.
  m.bidirectional = False
  # Concatenate z to every decoder input (False: z sets the decoder's initial state only).
  m.latent_every_step = False
  # Bowman's word dropout: probability of replacing a decoder input word by <unk> (training).
  m.decoder_word_dropout = 0.25
  # Output logits through the embedding (needs emb_dim == hidden_dim, else a projection).
  m.tie_output = False
  # KL annealing: 'constant' (weight 1), 'linear' (0 → 1 over kl_warmup_steps) or 'cyclical'
  # (Fu et al., 2019: each kl_cycle_steps cycle rises 0 → 1 over its first kl_cycle_ratio, then 1).
  m.kl_schedule = 'linear'
  m.kl_warmup_steps = 10_000
  m.kl_cycle_steps = 10_000
  m.kl_cycle_ratio = 0.5
  # Free bits (Kingma et al., 2016): nats per latent unit of batch-mean KL left unpenalised
  # (0 = off); counters posterior collapse.
  m.free_bits = 0.0
  # Computation dtype; params stay float32.
  m.dtype = 'float32'
  unknown = sorted(set(values) - set(m.keys()))
  if unknown:
    raise ValueError(f'config.model has no fields {unknown}; valid: {sorted(m.keys())}')
  m.update(values)
  return m


def set_eval(c: ml_collections.ConfigDict, iw_samples: int) -> None:
  """VAE eval fields on `c` (the trainer's last eval and experiments/evaluate.py use them)."""
  # Importance samples per sentence for the IW bound on −log p(x) (Burda et al., 2016),
  # reported as iw_nll / iw_perplexity at the end of training and by evaluate.py; 0 = off.
  c.eval.iw_samples = iw_samples
  # The ELBO's per-word bound (eval nll) selects the best checkpoint.
  c.train.best_metric = 'nll'
  c.train.best_mode = 'min'
  # No label smoothing: the reconstruction term is the likelihood.
  c.train.label_smoothing = 0.0
  # Sentence VAEs read whole sentences: no packing, no carried state.
  c.train.stateful = False
