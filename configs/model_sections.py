"""Model sections shared by the config files: every field commented once, here.

A config file sets `c.model = model_sections.lstm(kind=…, …)` (or
`transformer_encoder(…)`) and passes only the values it changes.
"""

import ml_collections


def lstm(**values) -> ml_collections.ConfigDict:
  """`config.model` for the LSTM family (lmjax.models.lstm.LSTMConfig); `values` override."""
  m = ml_collections.ConfigDict()
  # Model family.
  m.family = 'lstm'
  # 'encdec' (seq2seq with attention), 'decoder' (language model) or 'encoder' (classify/tag).
  m.kind = 'encdec'
  # Embedding width.
  m.emb_dim = 128
  # LSTM width (per direction).
  m.hidden_dim = 256
  # Encoder layers (encdec, encoder) or LM layers (decoder).
  m.num_layers = 1
  # Decoder layers (encdec only).
  m.num_decoder_layers = 1
  # Dropout on embeddings, between layers and before the output.
  m.dropout_rate = 0.1
  # Bidirectional encoder (encdec, encoder).
  m.bidirectional = True
  # Attention (encdec): 'bahdanau' (additive), 'luong_dot', 'luong_general' or 'none'.
  m.attention = 'bahdanau'
  # Feed the previous attentional vector into the next decoder input (encdec).
  m.input_feeding = True
  # Output logits through the target embedding (encdec, decoder; needs emb_dim == hidden_dim).
  m.tie_output = False
  # One embedding table for source and target (encdec).
  m.share_embeddings = True
  # Sentence vector for head='classify': 'last', 'mean', 'max' or 'attention' pooling.
  m.pooling = 'last'
  # Linear-chain CRF over the tags (encoder, head='tag').
  m.use_crf = False
  # Encoder head: 'classify' or 'tag' ('' for encdec/decoder).
  m.head = ''
  # Encoder: probability of replacing a word by <unk> in training (teaches the <unk> vector).
  m.word_dropout = 0.0
  # Encoder (tag): byte-embedding width of a character CNN over each word's bytes (batch
  # field `chars`, config.task.word_chars > 0); 0 = no character features.
  m.char_dim = 0
  # Character CNN: filters (features per word) and window width in bytes.
  m.char_filters = 50
  m.char_width = 3
  # Computation dtype: 'float32', 'bfloat16' or 'auto' (bfloat16 on TPU/GPU, float32 on
  # CPU); params stay float32.
  m.dtype = 'auto'
  _update(m, values)
  return m


def transformer_encoder(**values) -> ml_collections.ConfigDict:
  """`config.model` for Transformer encoder heads (lmjax.models.heads.TransformerEncoderConfig)."""
  m = ml_collections.ConfigDict()
  # Model family and kind.
  m.family = 'transformer'
  m.kind = 'encoder'
  # Model width.
  m.emb_dim = 128
  # Attention heads.
  m.num_heads = 4
  # Query/key/value width (all heads).
  m.qkv_dim = 128
  # Feed-forward width.
  m.mlp_dim = 512
  # Encoder layers.
  m.num_encoder_layers = 2
  # Position table size (>= task lengths).
  m.max_len = 32
  # Residual and embedding dropout.
  m.dropout_rate = 0.1
  # Attention-weight dropout.
  m.attention_dropout_rate = 0.0
  # Pre-LayerNorm (True) or post-LayerNorm (False).
  m.pre_ln = True
  # 'sinusoidal' or 'learned' positions.
  m.position = 'sinusoidal'
  # Sentence vector for head='classify': 'last', 'mean', 'max' or 'attention' pooling.
  m.pooling = 'mean'
  # Linear-chain CRF over the tags (head='tag').
  m.use_crf = False
  # 'classify', 'tag' or 'mlm' (masked-LM pretraining: BERT's head, vocabulary logits).
  m.head = 'classify'
  # Computation dtype: 'float32', 'bfloat16' or 'auto' (bfloat16 on TPU/GPU, float32 on CPU).
  m.dtype = 'auto'
  # Attention: 'auto', 'reference', 'xla', 'cudnn' or 'splash' (see configs/default.py).
  m.attention_impl = 'auto'
  _update(m, values)
  return m


def t5_v11(m: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Makes a Transformer `config.model` (configs/default.py) T5 v1.1's architecture: relative
  position bias, RMSNorm, no biases, gated-GELU (tanh), unscaled attention scores and
  embeddings, one embedding table, untied logits. Sizes are left as they are.

  The span-corruption pretraining config and the fine-tunes that start from it share this
  (a warm start needs the same architecture).
  """
  m.position = 'relative'
  m.norm = 'rmsnorm'
  m.use_bias = False
  m.mlp_activation = 'gated_gelu_tanh'
  m.scale_attention = False
  m.embed_scale = 'none'
  m.share_embeddings = True
  m.tie_output = False
  return m


def _update(section: ml_collections.ConfigDict, values) -> None:
  unknown = sorted(set(values) - set(section.keys()))
  if unknown:
    raise ValueError(f'config.model has no fields {unknown}; valid: {sorted(section.keys())}')
  section.update(values)
