"""BERT (Hugging Face `model_type` 'bert', BertForMaskedLM) as an lmjax masked-LM encoder.

BERT is a post-LN Transformer encoder (LayerNorm after each residual add, epsilon
`layer_norm_eps`; no norm after the stack) with biases on every projection, attention
scores scaled by 1/sqrt(head_dim), an exact (erf) GELU MLP, unscaled word embeddings plus
learned absolute positions (from 0) plus token-type row 0 (single-segment input), then an
embedding LayerNorm before the first layer. lmjax holds the type table and that norm as
`config.model.type_vocab_size` and `config.model.embed_norm`. Its MLM head
(`cls.predictions`) is lmjax's head='mlm' (`lmjax.models.heads.MLMHead`): dense, exact
GELU, LayerNorm, then logits tied to the word embeddings plus a vocabulary bias
(`cls.predictions.decoder.weight` and `.decoder.bias`, where a file has them, are tied
copies of `bert.embeddings.word_embeddings.weight` and `cls.predictions.bias`). lmjax's
attention has no key bias (softmax cancels it): `attention.self.key.bias` is checked and
dropped on import and written as zeros on export (`mapping.Table.dropped`).

Token ids. BERT's [PAD] is 0, as lmjax's padding; the table maps the vocabulary row for
row, so an imported model reads BERT's ids. A workdir import would also need BERT's
WordPiece vocabulary (vocab.txt) bridged to an lmjax tokenizer and the rows permuted to
lmjax's contract ([SEP] → EOS 1, [UNK] → 2, the rest shifted); neither exists yet, so
`import_hf.py` stops with one HFError (`tokenizer`).

Not read: BertForPreTraining files (a pooler and the next-sentence head, reported as
unmatched tensors), relative position embeddings and decoder (cross-attention) BERTs.
"""

import dataclasses
from typing import Any, Dict, Iterable, Optional


from lmjax.hf import mapping
from lmjax.hf.files import HFError
from lmjax.models import heads

MODEL_TYPES = ('bert',)
# HF hidden_act → config.model.mlp_activation. BERT's MLM head applies hidden_act too, and
# lmjax's MLMHead always applies the exact GELU, so that is the one BERT lmjax expresses.
ACTIVATIONS = {'gelu': 'gelu'}
# The word embedding parameter (its rows: the vocabulary).
EMBEDDING = 'embed/embedding'
# The tokenizer file of the checkpoint and what it is (for errors); BERT has no bridge yet,
# so no config.task.tokenizer.type either (`tokenizer` raises before one is needed).
TOKENIZER_FILE = 'vocab.txt'
TOKENIZER_HINT = ("BERT's WordPiece vocabulary; lmjax cannot import a BERT checkpoint as a "
                  'workdir yet: no WordPiece bridge')
TOKENIZER_TYPE = None
NOT_SUPPORTED = ('importing a BERT checkpoint as an lmjax workdir is not supported yet: lmjax '
                 'has no WordPiece tokenizer bridge (convert its tensors with '
                 'lmjax.hf.mapping.to_lmjax and bert.table instead)')


def model_config(hf: Dict[str, Any], tensor_names: Iterable[str]) -> Dict[str, Any]:
  """config.model fields (family, kind, head and hyperparameters) of the checkpoint's model.

  Args:
    hf: its config.json.
    tensor_names: the checkpoint's tensor names (unused: BERT's MLM logits are always tied).

  Returns:
    {field: value} for `config.model`; 'vocab_size' is BERT's.

  Raises:
    HFError: a BERT option lmjax cannot express (one line naming the field).
  """
  del tensor_names
  unsupported = {'position_embedding_type': 'absolute', 'is_decoder': False,
                 'add_cross_attention': False, 'tie_word_embeddings': True}
  for field, want in unsupported.items():
    if hf.get(field, want) != want:
      raise HFError(f'config.json: {field}={hf.get(field)!r} is not supported for BERT '
                    f'(needs {want!r})')
  if hf.get('pad_token_id', 0) != 0:
    raise HFError(f'config.json: pad_token_id={hf.get("pad_token_id")!r}; lmjax pads with 0')
  activation = hf.get('hidden_act', 'gelu')
  if activation not in ACTIVATIONS:
    raise HFError(f'config.json: hidden_act={activation!r} is not supported for BERT (needs '
                  "'gelu': lmjax's MLM head applies the exact GELU)")
  width = hf['hidden_size']
  return dict(
      family='transformer', kind='encoder', head='mlm', pooling='mean', use_crf=False,
      vocab_size=hf['vocab_size'], emb_dim=width, num_heads=hf['num_attention_heads'],
      qkv_dim=width, mlp_dim=hf['intermediate_size'],
      num_encoder_layers=hf['num_hidden_layers'], max_len=hf['max_position_embeddings'],
      dropout_rate=hf.get('hidden_dropout_prob', 0.1),
      attention_dropout_rate=hf.get('attention_probs_dropout_prob', 0.1), pre_ln=False,
      position='learned', scale_attention=True, embed_scale='none', init='gpt2',
      use_bias=True, norm='layernorm', norm_epsilon=hf.get('layer_norm_eps', 1e-12),
      mlp_activation=ACTIVATIONS[activation], type_vocab_size=hf.get('type_vocab_size', 2),
      embed_norm=True)


def tokenizer(data: bytes, hf: Dict[str, Any]):
  """Would bridge BERT's vocab.txt; raises HFError (`NOT_SUPPORTED`) until lmjax has one."""
  del data, hf
  raise HFError(NOT_SUPPORTED)


def tokenizer_file(bridged) -> Optional[bytes]:
  """No lmjax tokenizer is a BERT bridge yet, so export writes no vocab.txt (None)."""
  del bridged
  return None


def hf_config(model: Dict[str, Any]) -> Dict[str, Any]:
  """config.json of an lmjax BERT-style MLM encoder (`config.model` fields + 'vocab_size')."""
  back = {v: k for k, v in ACTIVATIONS.items()}
  return {
      'architectures': ['BertForMaskedLM'], 'model_type': 'bert',
      'vocab_size': model['vocab_size'], 'hidden_size': model['emb_dim'],
      'num_hidden_layers': model['num_encoder_layers'],
      'num_attention_heads': model['num_heads'], 'intermediate_size': model['mlp_dim'],
      'hidden_act': back[model['mlp_activation']],
      'hidden_dropout_prob': model['dropout_rate'],
      'attention_probs_dropout_prob': model['attention_dropout_rate'],
      'max_position_embeddings': model['max_len'], 'type_vocab_size': model['type_vocab_size'],
      'layer_norm_eps': model['norm_epsilon'], 'position_embedding_type': 'absolute',
      'pad_token_id': 0, 'tie_word_embeddings': True, 'is_decoder': False,
  }


def check_expressible(model: Dict[str, Any]) -> None:
  """Raises HFError naming the config.model fields a BertForMaskedLM checkpoint cannot hold
  (fields the config leaves out take the encoder's defaults)."""
  defaults = {f.name: f.default for f in dataclasses.fields(heads.TransformerEncoderConfig)
              if f.default is not dataclasses.MISSING}
  model = dict(defaults, **model)
  want = dict(family='transformer', kind='encoder', head='mlm', pre_ln=False,
              position='learned', scale_attention=True, embed_scale='none', use_bias=True,
              norm='layernorm', embed_norm=True, mlp_activation='gelu')
  wrong = [f'config.model.{k}={model.get(k)!r} (BERT needs {v!r})' for k, v in want.items()
           if model.get(k) != v]
  if model.get('qkv_dim') != model.get('emb_dim'):
    wrong.append(f'config.model.qkv_dim={model.get("qkv_dim")!r} (BERT needs emb_dim='
                 f'{model.get("emb_dim")!r})')
  if not model.get('type_vocab_size'):
    wrong.append(f'config.model.type_vocab_size={model.get("type_vocab_size")!r} (BERT needs '
                 'a token-type table: >= 1)')
  if wrong:
    raise HFError('the model is not a BERT: ' + '; '.join(wrong))


def table(model: Dict[str, Any]) -> mapping.Table:
  """The parameter table of a BertForMaskedLM with these `config.model` fields."""
  num_heads = model['num_heads']
  q_in, q_back = mapping.split_heads_in(num_heads)
  o_in, o_back = mapping.split_heads_out(num_heads)
  bias_in = mapping.reshape(lambda x: (num_heads, x.shape[0] // num_heads))  # (H*Dh,) → (H, Dh)
  bias_back = mapping.reshape(lambda x: (-1,))
  dense = dict(to_lmjax=mapping.transpose, to_hf=mapping.transpose)
  entries = [
      mapping.Entry(EMBEDDING, 'bert.embeddings.word_embeddings.weight'),
      mapping.Entry('encoder/pos/pos_embedding', 'bert.embeddings.position_embeddings.weight'),
      mapping.Entry('encoder/type_embed/embedding',
                    'bert.embeddings.token_type_embeddings.weight'),
      mapping.Entry('encoder/embed_ln/scale', 'bert.embeddings.LayerNorm.weight'),
      mapping.Entry('encoder/embed_ln/bias', 'bert.embeddings.LayerNorm.bias'),
      mapping.Entry('head/transform/kernel', 'cls.predictions.transform.dense.weight', **dense),
      mapping.Entry('head/transform/bias', 'cls.predictions.transform.dense.bias'),
      mapping.Entry('head/transform_ln/scale', 'cls.predictions.transform.LayerNorm.weight'),
      mapping.Entry('head/transform_ln/bias', 'cls.predictions.transform.LayerNorm.bias'),
      mapping.Entry('head/bias', 'cls.predictions.bias')]
  dropped = {}
  for i in range(model['num_encoder_layers']):
    ours, theirs = f'encoder/layer_{i}', f'bert.encoder.layer.{i}'
    attn, hf_attn = f'{ours}/self_attention', f'{theirs}.attention'
    for proj in ('query', 'key', 'value'):
      entries.append(mapping.Entry(f'{attn}/{proj}/kernel', f'{hf_attn}.self.{proj}.weight',
                                   q_in, q_back))
      if proj != 'key':
        entries.append(mapping.Entry(f'{attn}/{proj}/bias', f'{hf_attn}.self.{proj}.bias',
                                     bias_in, bias_back))
    dropped[f'{hf_attn}.self.key.bias'] = f'{hf_attn}.self.query.bias'
    entries += [
        mapping.Entry(f'{attn}/out/kernel', f'{hf_attn}.output.dense.weight', o_in, o_back),
        mapping.Entry(f'{attn}/out/bias', f'{hf_attn}.output.dense.bias'),
        mapping.Entry(f'{ours}/mlp/wi/kernel', f'{theirs}.intermediate.dense.weight', **dense),
        mapping.Entry(f'{ours}/mlp/wi/bias', f'{theirs}.intermediate.dense.bias'),
        mapping.Entry(f'{ours}/mlp/wo/kernel', f'{theirs}.output.dense.weight', **dense),
        mapping.Entry(f'{ours}/mlp/wo/bias', f'{theirs}.output.dense.bias')]
    for norm, hf_norm in (('self_attention_ln', f'{hf_attn}.output.LayerNorm'),
                          ('mlp_ln', f'{theirs}.output.LayerNorm')):
      entries.append(mapping.Entry(f'{ours}/{norm}/scale', f'{hf_norm}.weight'))
      entries.append(mapping.Entry(f'{ours}/{norm}/bias', f'{hf_norm}.bias'))
  aliases = {'cls.predictions.decoder.weight': 'bert.embeddings.word_embeddings.weight',
             'cls.predictions.decoder.bias': 'cls.predictions.bias'}
  return mapping.Table(entries, aliases,
                       buffers=(r'bert\.embeddings\.(position_ids|token_type_ids)',),
                       dropped=dropped)
