"""GPT-2 (Hugging Face `model_type` 'gpt2', GPT2LMHeadModel) as an lmjax decoder-only LM.

GPT-2 is a pre-LN Transformer with LayerNorm (with bias, epsilon `layer_norm_epsilon`) and a
final `ln_f`, biases on every projection, attention scores scaled by 1/sqrt(head_dim),
learned absolute positions (`wpe`, from 0), unscaled embeddings, a `gelu_new` (tanh) MLP and
logits tied to `wte` without a bias. Its projections are `Conv1D`s, whose weights are
stored (in, out), as flax kernels; `c_attn` holds query|key|value along its output axis
(three `mapping.Entry` parts). lmjax's attention has no key bias (softmax cancels it), so
the key part of `c_attn.bias` is dropped on import and written as zeros on export.

Token ids. lmjax reserves 0 (padding, and the BOS fed before the first token), 1 (EOS)
and 2 (unknown); GPT-2 has one special token, <|endoftext|> (its last id, E = vocab − 1),
as both BOS and EOS, and no padding or unknown token. The lmjax vocabulary is GPT-2's plus
two rows:

    lmjax 0, 1, 2   ← HF E (<|endoftext|>): BOS, EOS, and a copy for the unused unknown
    lmjax 3 + i     ← HF i, for i < E

so a GPT-2 document [E, t1, t2, ...] is lmjax's BOS-shifted [0, t1 + 3, t2 + 3, ...] at the
same positions. Export keeps row 1 for E and drops rows 0 and 2, after checking that row 0
equals row 1 (a fine-tune that taught BOS and EOS different vectors is not a GPT-2).
With tied logits rows 0 and 2 score as EOS does, so decoding must never emit them
(`NEVER_EMITTED`, for the decoders' `banned_ids`); EOS then wins the tie. An imported
workdir keeps them in config.model.never_emit, which every lmjax decoder honours.

Files. GPT2LMHeadModel names its tensors `transformer.wte.weight`, ...; GPT2Model (and the
hub's `gpt2` repository) `wte.weight`, ..., with the causal-mask buffers
`h.{i}.attn.bias` / `h.{i}.attn.masked_bias` in older files: both are read (the table's
`prefix` and `buffers`). The tokenizer is the checkpoint's tokenizer.json (byte-level BPE),
kept whole as an lmjax 'hf_bpe' tokenizer (`lmjax.data.tokenizers.HFBPETokenizer`) that
maps ids as above.
"""

from typing import Any, Dict, Iterable, Optional

import numpy as np

from lmjax.data import tokenizers as tok_lib
from lmjax.hf import mapping
from lmjax.hf.files import HFError

MODEL_TYPES = ('gpt2',)
# HF activation_function → config.model.mlp_activation.
ACTIVATIONS = {'gelu_new': 'gelu_tanh', 'gelu_pytorch_tanh': 'gelu_tanh', 'gelu': 'gelu',
               'relu': 'relu', 'silu': 'silu', 'swish': 'silu'}
# lmjax ids before GPT-2's own (padding/BOS, EOS, unknown).
RESERVED = 3
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
# Ids a decoder must not choose: copies of <|endoftext|>'s row that are not EOS.
NEVER_EMITTED = (PAD_ID, UNK_ID)
# The word embedding parameter (its rows: lmjax's vocabulary).
EMBEDDING = 'embed/embedding'
# The tokenizer file of the checkpoint, what it is, and the config.task.tokenizer.type of
# its bridge.
TOKENIZER_FILE = 'tokenizer.json'
TOKENIZER_HINT = ('the byte-level BPE tokenizer GPT-2 checkpoints ship; from vocab.json and '
                  'merges.txt, transformers.GPT2TokenizerFast.from_pretrained(DIR)'
                  '.save_pretrained(DIR) writes it')
TOKENIZER_TYPE = 'hf_bpe'


def lmjax_ids(hf_ids, hf_vocab: int) -> np.ndarray:
  """GPT-2 ids → lmjax ids (<|endoftext|> → EOS, i → i + 3).

  Args:
    hf_ids: GPT-2 token ids, any shape.
    hf_vocab: GPT-2's vocabulary size V (<|endoftext|> = V − 1).

  Returns:
    int32 lmjax ids, the shape of `hf_ids`.
  """
  return tok_lib.ids_from_hf(hf_ids, hf_vocab, RESERVED)


def hf_ids(ids, hf_vocab: int) -> np.ndarray:
  """lmjax ids → GPT-2 ids (0, 1 and 2 → <|endoftext|>, i → i − 3).

  Args:
    ids: lmjax token ids, any shape.
    hf_vocab: GPT-2's vocabulary size V.

  Returns:
    int64 GPT-2 ids (torch's index dtype), the shape of `ids`.
  """
  return tok_lib.ids_to_hf(ids, hf_vocab, RESERVED)


def hf_logits(logits) -> np.ndarray:
  """lmjax logits in GPT-2's id order (rows 0 and 2 dropped: they copy EOS's).

  Args:
    logits: (..., V + 2) lmjax logits.

  Returns:
    (..., V) logits, column i for GPT-2 id i.
  """
  logits = np.asarray(logits)
  return np.concatenate([logits[..., RESERVED:], logits[..., EOS_ID:EOS_ID + 1]], axis=-1)


def _embedding_in(wte: np.ndarray) -> np.ndarray:
  """HF wte (V, D) → lmjax embedding (V + 2, D)."""
  if wte.ndim != 2:
    raise ValueError('expected a (vocab, width) table')
  end = wte[-1:]
  return np.concatenate([end, end, end, wte[:-1]], axis=0)


def _embedding_out(table: np.ndarray) -> np.ndarray:
  """lmjax embedding (V + 2, D) → HF wte (V, D); HFError if BOS and EOS rows differ."""
  if not np.array_equal(table[PAD_ID], table[EOS_ID]):
    diff = float(np.max(np.abs(table[PAD_ID].astype(np.float32) -
                               table[EOS_ID].astype(np.float32))))
    raise HFError(f'embed/embedding rows {PAD_ID} (BOS) and {EOS_ID} (EOS) differ (max '
                  f'{diff:.3g}); GPT-2 has one <|endoftext|> vector for both, so this model '
                  'cannot be exported as GPT-2')
  return np.concatenate([table[RESERVED:], table[EOS_ID:EOS_ID + 1]], axis=0)


def model_config(hf: Dict[str, Any], tensor_names: Iterable[str]) -> Dict[str, Any]:
  """config.model fields (family, kind and hyperparameters) of the checkpoint's model.

  Args:
    hf: its config.json.
    tensor_names: the checkpoint's tensor names (unused: GPT-2's logits are always tied).

  Returns:
    {field: value} for `config.model`; 'vocab_size' is lmjax's (GPT-2's + 2).

  Raises:
    HFError: a GPT-2 option lmjax cannot express (one line naming the field).
  """
  del tensor_names
  vocab = hf['vocab_size']
  for field in ('bos_token_id', 'eos_token_id'):
    if hf.get(field, vocab - 1) != vocab - 1:
      raise HFError(f'config.json: {field}={hf.get(field)!r}; lmjax maps GPT-2\'s '
                    f'<|endoftext|> as the last id (vocab_size - 1 = {vocab - 1})')
  unsupported = {'scale_attn_by_inverse_layer_idx': False, 'add_cross_attention': False,
                 'tie_word_embeddings': True}
  for field, want in unsupported.items():
    if hf.get(field, want) != want:
      raise HFError(f'config.json: {field}={hf.get(field)!r} is not supported for GPT-2 '
                    f'(needs {want!r})')
  activation = hf.get('activation_function', 'gelu_new')
  if activation not in ACTIVATIONS:
    raise HFError(f'config.json: activation_function={activation!r} is not one of '
                  f'{sorted(ACTIVATIONS)}')
  width = hf['n_embd']
  return dict(
      family='transformer', kind='decoder', vocab_size=vocab + 2, emb_dim=width,
      num_heads=hf['n_head'], qkv_dim=width, mlp_dim=hf.get('n_inner') or 4 * width,
      num_encoder_layers=0, num_decoder_layers=hf['n_layer'], max_len=hf['n_positions'],
      dropout_rate=hf.get('resid_pdrop', 0.1), attention_dropout_rate=hf.get('attn_pdrop', 0.1),
      pre_ln=True, position='learned', scale_attention=hf.get('scale_attn_weights', True),
      embed_scale='none', init='gpt2', use_bias=True, norm='layernorm',
      norm_epsilon=hf.get('layer_norm_epsilon', 1e-5), mlp_activation=ACTIVATIONS[activation],
      share_embeddings=False, tie_output=True, scale_tied_logits=False,
      never_emit=list(NEVER_EMITTED))


def tokenizer(data: bytes, hf: Dict[str, Any]) -> tok_lib.HFBPETokenizer:
  """The checkpoint's tokenizer.json as an lmjax tokenizer (GPT-2 id i → lmjax i + 3).

  Args:
    data: the tokenizer.json file.
    hf: the checkpoint's config.json.

  Returns:
    The tokenizer.

  Raises:
    ValueError: not a tokenizer.json, or one whose size is not the model's (lmjax maps its
      last id, <|endoftext|>, to EOS); ImportError: no `tokenizers` package.
  """
  bridged = tok_lib.HFBPETokenizer(data.decode('utf-8'), RESERVED)
  if bridged.hf_vocab != hf['vocab_size']:
    raise ValueError(f'it has {bridged.hf_vocab} tokens and config.json vocab_size='
                     f'{hf["vocab_size"]}; lmjax maps the last id of both (<|endoftext|>) to EOS, '
                     'so they must be equal')
  return bridged


def tokenizer_file(bridged) -> Optional[bytes]:
  """tokenizer.json of a workdir's tokenizer, for export (None unless it is an imported one)."""
  if isinstance(bridged, tok_lib.HFBPETokenizer):
    return bridged.tokenizer_json.encode('utf-8')
  return None


def hf_config(model: Dict[str, Any]) -> Dict[str, Any]:
  """config.json of an lmjax GPT-2-style model (`config.model` fields + 'vocab_size')."""
  back = {'gelu_tanh': 'gelu_new', 'gelu': 'gelu', 'relu': 'relu', 'silu': 'silu'}
  vocab = model['vocab_size'] - 2
  return {
      'architectures': ['GPT2LMHeadModel'], 'model_type': 'gpt2', 'vocab_size': vocab,
      'n_embd': model['emb_dim'], 'n_head': model['num_heads'], 'n_layer':
      model['num_decoder_layers'], 'n_inner': model['mlp_dim'], 'n_positions': model['max_len'],
      'activation_function': back[model['mlp_activation']],
      'resid_pdrop': model['dropout_rate'], 'embd_pdrop': model['dropout_rate'],
      'attn_pdrop': model['attention_dropout_rate'], 'layer_norm_epsilon': model['norm_epsilon'],
      'scale_attn_weights': bool(model['scale_attention']), 'tie_word_embeddings': True,
      'bos_token_id': vocab - 1, 'eos_token_id': vocab - 1,
  }


def check_expressible(model: Dict[str, Any]) -> None:
  """Raises HFError naming the config.model fields a GPT-2 checkpoint cannot hold."""
  want = dict(family='transformer', kind='decoder', pre_ln=True, position='learned',
              use_bias=True, norm='layernorm', tie_output=True, scale_tied_logits=False)
  wrong = [f'config.model.{k}={model.get(k)!r} (GPT-2 needs {v!r})' for k, v in want.items()
           if model.get(k) != v]
  if model.get('qkv_dim') != model.get('emb_dim'):
    wrong.append(f'config.model.qkv_dim={model.get("qkv_dim")!r} (GPT-2 needs emb_dim='
                 f'{model.get("emb_dim")!r})')
  embed_scale, init = model.get('embed_scale', 'init'), model.get('init', 'xavier')
  if embed_scale == 'sqrt_dim' or (embed_scale == 'init' and init == 'xavier'):
    wrong.append(f'config.model.embed_scale={embed_scale!r} with init={init!r} scales the '
                 "embeddings (GPT-2 needs 'none')")
  if model.get('mlp_activation') not in ('gelu_tanh', 'gelu', 'relu', 'silu'):
    wrong.append(f'config.model.mlp_activation={model.get("mlp_activation")!r} (GPT-2 needs '
                 "'gelu_tanh', 'gelu', 'relu' or 'silu')")
  if wrong:
    raise HFError('the model is not a GPT-2: ' + '; '.join(wrong))


def table(model: Dict[str, Any]) -> mapping.Table:
  """The parameter table of a GPT-2 with these `config.model` fields."""
  heads = model['num_heads']
  split = mapping.reshape(lambda x: x.shape[:-1] + (heads, x.shape[-1] // heads))  # (..., H, Dh)
  merge = mapping.reshape(lambda x: x.shape[:-2] + (-1,))
  out_in = mapping.reshape(lambda x: (heads, x.shape[0] // heads, x.shape[1]))  # (H, Dh, D)
  out_back = mapping.reshape(lambda x: (-1, x.shape[-1]))
  entries = [mapping.Entry('embed/embedding', 'transformer.wte.weight', _embedding_in,
                           _embedding_out),
             mapping.Entry('decoder/pos/pos_embedding', 'transformer.wpe.weight'),
             mapping.Entry('decoder/final_ln/scale', 'transformer.ln_f.weight'),
             mapping.Entry('decoder/final_ln/bias', 'transformer.ln_f.bias')]
  for i in range(model['num_decoder_layers']):
    ours, theirs = f'decoder/layer_{i}', f'transformer.h.{i}'
    attn = f'{ours}/self_attention'
    for k, proj in enumerate(('query', 'key', 'value')):
      entries.append(mapping.Entry(f'{attn}/{proj}/kernel', f'{theirs}.attn.c_attn.weight',
                                   split, merge, part=(k, 3)))
      entries.append(mapping.Entry(None if proj == 'key' else f'{attn}/{proj}/bias',
                                   f'{theirs}.attn.c_attn.bias', split, merge, part=(k, 3)))
    entries += [
        mapping.Entry(f'{attn}/out/kernel', f'{theirs}.attn.c_proj.weight', out_in, out_back),
        mapping.Entry(f'{attn}/out/bias', f'{theirs}.attn.c_proj.bias'),
        mapping.Entry(f'{ours}/mlp/wi/kernel', f'{theirs}.mlp.c_fc.weight'),
        mapping.Entry(f'{ours}/mlp/wi/bias', f'{theirs}.mlp.c_fc.bias'),
        mapping.Entry(f'{ours}/mlp/wo/kernel', f'{theirs}.mlp.c_proj.weight'),
        mapping.Entry(f'{ours}/mlp/wo/bias', f'{theirs}.mlp.c_proj.bias')]
    for norm, hf_norm in (('self_attention_ln', 'ln_1'), ('mlp_ln', 'ln_2')):
      entries.append(mapping.Entry(f'{ours}/{norm}/scale', f'{theirs}.{hf_norm}.weight'))
      entries.append(mapping.Entry(f'{ours}/{norm}/bias', f'{theirs}.{hf_norm}.bias'))
  return mapping.Table(entries, {'lm_head.weight': 'transformer.wte.weight'},
                       buffers=(r'transformer\.h\.\d+\.attn\.(bias|masked_bias)',),
                       prefix='transformer.')
