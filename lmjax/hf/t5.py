"""T5 v1.0, T5 v1.1 and mT5 (Hugging Face `model_type` 't5' / 'mt5') as lmjax encoder-decoders.

T5 is a pre-LN Transformer with RMSNorm (scale only), no biases, unscaled attention
scores, T5's relative position bias (one table per stack, in its first layer), unscaled
embeddings shared by encoder and decoder, and either a ReLU MLP with logits tied to the
embeddings and the decoder output scaled by d_model^-0.5 (v1.0), or a gated-GELU MLP
(tanh approximation) with an untied `lm_head` (v1.1, mT5). Token ids already follow
lmjax's contract (0 = padding and decoder start, 1 = EOS, 2 = unknown).
"""

from typing import Any, Dict, Iterable, Optional

from lmjax.data import tokenizers as tok_lib
from lmjax.hf import mapping
from lmjax.hf.files import HFError

MODEL_TYPES = ('t5', 'mt5')
# The word embedding parameter (its rows: lmjax's vocabulary).
EMBEDDING = 'source_embed/embedding'
# The tokenizer file of the checkpoint, what it is, and the config.task.tokenizer.type of
# its bridge.
TOKENIZER_FILE = 'spiece.model'
TOKENIZER_HINT = ("the SentencePiece model T5 tokenizers ship; copy it from the checkpoint's "
                  'repository')
TOKENIZER_TYPE = 'sentencepiece'
# HF feed_forward_proj → config.model.mlp_activation ('gated-gelu' is gelu_new, tanh form).
ACTIVATIONS = {'relu': 'relu', 'gelu': 'gelu', 'gelu_new': 'gelu_tanh', 'silu': 'silu',
               'gated-relu': 'gated_relu', 'gated-gelu': 'gated_gelu_tanh',
               'gated-gelu_new': 'gated_gelu_tanh', 'gated-silu': 'gated_silu'}


def _activation(hf: Dict[str, Any]) -> str:
  proj = hf.get('feed_forward_proj', 'relu')
  if proj not in ACTIVATIONS:
    raise HFError(f'config.json: feed_forward_proj={proj!r} is not one of {sorted(ACTIVATIONS)}')
  return ACTIVATIONS[proj]


def tied(hf: Dict[str, Any], tensor_names: Iterable[str]) -> bool:
  """Whether the logits use the shared embedding: no separate `lm_head.weight` tensor, or one
  that the config calls a tied copy (checked equal on import)."""
  if 'lm_head.weight' not in set(tensor_names):
    return True
  return hf.get('tie_word_embeddings', True) is not False


def model_config(hf: Dict[str, Any], tensor_names: Iterable[str]) -> Dict[str, Any]:
  """config.model fields (family, kind and hyperparameters) of the checkpoint's model.

  Args:
    hf: its config.json.
    tensor_names: the checkpoint's tensor names (an `lm_head.weight` means untied logits).

  Returns:
    {field: value} for `config.model`; vocab sizes go in 'vocab_size'.
  """
  is_tied = tied(hf, tensor_names)
  # transformers >= 5 writes `scale_decoder_outputs`; before, tied logits were always scaled.
  scale = hf.get('scale_decoder_outputs', is_tied)
  if scale and not is_tied:
    raise HFError('config.json: scale_decoder_outputs=true with a separate lm_head.weight: '
                  'lmjax scales the decoder output only before tied logits')
  return dict(
      family='transformer', kind='encdec', vocab_size=hf['vocab_size'],
      emb_dim=hf['d_model'], num_heads=hf['num_heads'], qkv_dim=hf['num_heads'] * hf['d_kv'],
      mlp_dim=hf['d_ff'], num_encoder_layers=hf['num_layers'],
      num_decoder_layers=hf.get('num_decoder_layers') or hf['num_layers'],
      max_len=hf.get('n_positions', 512), dropout_rate=hf.get('dropout_rate', 0.1),
      attention_dropout_rate=0.0, pre_ln=True, position='relative',
      relative_buckets=hf.get('relative_attention_num_buckets', 32),
      relative_max_distance=hf.get('relative_attention_max_distance', 128),
      scale_attention=False, embed_scale='none', use_bias=False, norm='rmsnorm',
      norm_epsilon=hf.get('layer_norm_epsilon', 1e-6), mlp_activation=_activation(hf),
      share_embeddings=True, tie_output=is_tied, scale_tied_logits=bool(is_tied and scale),
      never_emit=[])


def tokenizer(data: bytes, hf: Dict[str, Any]) -> tok_lib.SentencePieceTokenizer:
  """The checkpoint's spiece.model as an lmjax tokenizer (its ids are lmjax's already).

  Args:
    data: the spiece.model file.
    hf: the checkpoint's config.json (unused: T5's ids need no mapping).

  Returns:
    The tokenizer.

  Raises:
    ValueError, RuntimeError: not a SentencePiece model, or one whose pad/EOS/unknown ids
      are not 0, 1, 2.
  """
  del hf
  return tok_lib.SentencePieceTokenizer(data)


def tokenizer_file(bridged) -> Optional[bytes]:
  """spiece.model of a workdir's tokenizer, for export (None unless it is SentencePiece)."""
  if isinstance(bridged, tok_lib.SentencePieceTokenizer):
    return bridged.model_proto
  return None


def hf_config(model: Dict[str, Any]) -> Dict[str, Any]:
  """config.json of an lmjax T5-style model (`config.model` fields + 'vocab_size')."""
  back = {v: k for k, v in ACTIVATIONS.items() if k not in ('gated-gelu_new',)}
  if not model['tie_output'] and model.get('scale_tied_logits'):
    raise HFError('config.model.scale_tied_logits=True needs tie_output=True for T5')
  return {
      'architectures': ['T5ForConditionalGeneration'], 'model_type': 't5',
      'vocab_size': model['vocab_size'], 'd_model': model['emb_dim'],
      'd_kv': model['qkv_dim'] // model['num_heads'], 'd_ff': model['mlp_dim'],
      'num_layers': model['num_encoder_layers'],
      'num_decoder_layers': model['num_decoder_layers'], 'num_heads': model['num_heads'],
      'relative_attention_num_buckets': model['relative_buckets'],
      'relative_attention_max_distance': model['relative_max_distance'],
      'dropout_rate': model['dropout_rate'], 'layer_norm_epsilon': model['norm_epsilon'],
      'feed_forward_proj': back[model['mlp_activation']], 'is_encoder_decoder': True,
      'tie_word_embeddings': bool(model['tie_output']),
      'scale_decoder_outputs': bool(model['tie_output'] and model.get('scale_tied_logits')),
      'pad_token_id': 0, 'eos_token_id': 1, 'decoder_start_token_id': 0,
  }


def check_expressible(model: Dict[str, Any]) -> None:
  """Raises HFError naming the config.model fields a T5 checkpoint cannot hold."""
  want = dict(family='transformer', kind='encdec', pre_ln=True, position='relative',
              scale_attention=False, embed_scale='none', use_bias=False, norm='rmsnorm',
              share_embeddings=True)
  wrong = [f'config.model.{k}={model.get(k)!r} (T5 needs {v!r})' for k, v in want.items()
           if model.get(k) != v]
  if wrong:
    raise HFError('the model is not a T5: ' + '; '.join(wrong))


def table(model: Dict[str, Any]) -> mapping.Table:
  """The parameter table of a T5 with these `config.model` fields."""
  heads = model['num_heads']
  q_in, q_back = mapping.split_heads_in(heads)
  o_in, o_back = mapping.split_heads_out(heads)
  gated = model['mlp_activation'].startswith('gated_')
  entries = [mapping.Entry('source_embed/embedding', 'shared.weight')]
  aliases = {'encoder.embed_tokens.weight': 'shared.weight',
             'decoder.embed_tokens.weight': 'shared.weight'}
  if model['tie_output']:
    aliases['lm_head.weight'] = 'shared.weight'
  else:
    entries.append(mapping.Entry('decoder/logits/kernel', 'lm_head.weight', mapping.transpose,
                                 mapping.transpose))

  def attention(prefix, hf_prefix):
    for ours, theirs in (('query', 'q'), ('key', 'k'), ('value', 'v')):
      entries.append(mapping.Entry(f'{prefix}/{ours}/kernel', f'{hf_prefix}.{theirs}.weight',
                                   q_in, q_back))
    entries.append(mapping.Entry(f'{prefix}/out/kernel', f'{hf_prefix}.o.weight', o_in, o_back))

  def mlp(prefix, hf_prefix):
    names = (('wi_0', 'wi_0'), ('wi_1', 'wi_1')) if gated else (('wi', 'wi'),)
    for ours, theirs in names + (('wo', 'wo'),):
      entries.append(mapping.Entry(f'{prefix}/{ours}/kernel', f'{hf_prefix}.{theirs}.weight',
                                   mapping.transpose, mapping.transpose))

  for stack, depth in (('encoder', model['num_encoder_layers']),
                       ('decoder', model['num_decoder_layers'])):
    entries.append(mapping.Entry(f'{stack}/relpos/rel_embedding',
                                 f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight'))
    entries.append(mapping.Entry(f'{stack}/final_ln/scale', f'{stack}.final_layer_norm.weight'))
    for i in range(depth):
      ours, theirs = f'{stack}/layer_{i}', f'{stack}.block.{i}.layer'
      attention(f'{ours}/self_attention', f'{theirs}.0.SelfAttention')
      entries.append(mapping.Entry(f'{ours}/self_attention_ln/scale', f'{theirs}.0.layer_norm.weight'))
      n = 1
      if stack == 'decoder':
        attention(f'{ours}/cross_attention', f'{theirs}.1.EncDecAttention')
        entries.append(mapping.Entry(f'{ours}/cross_attention_ln/scale',
                                     f'{theirs}.1.layer_norm.weight'))
        n = 2
      mlp(f'{ours}/mlp', f'{theirs}.{n}.DenseReluDense')
      entries.append(mapping.Entry(f'{ours}/mlp_ln/scale', f'{theirs}.{n}.layer_norm.weight'))
  return mapping.Table(entries, aliases)
