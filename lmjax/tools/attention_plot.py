"""Source × target cross-attention heatmaps of a greedy-decoded sentence (both families).

The sentence is greedy-decoded, then the decoded target is fed back teacher-forced,
which reproduces the decoder states of every step. Row t of the map is the attention
of the step that produced target token t, over the real source tokens.

- Transformer: the inputs of `cross_attention/query` and `cross_attention/key` of the
  chosen decoder layer are captured (`capture_intermediates`), and the weights are
  computed by the model's own `attention.dot_product_attention` attending over one-hot
  values, so they are exactly the softmax the layer applied. Shape (B, H, T, S).
- LSTM: the model sows `intermediates/attention_weights` (B, T, S) itself.
"""

import dataclasses
import functools
import io
from typing import Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
from matplotlib import figure
import numpy as np

from lmjax import fileio
from lmjax.tools import inference
from lmjax.data import tokenizers as tok_lib
from lmjax.models import attention
from lmjax.models import layers
from lmjax.models import transformer


@dataclasses.dataclass
class AttentionMap:
  """Cross-attention of one decoded sentence.

  Attributes:
    weights: (T, S) float32; rows = target tokens (EOS included), columns = real
      source tokens; each row sums to 1.
    source_tokens: S column labels.
    target_tokens: T row labels.
    prediction: the detokenized greedy output.
    layer: decoder layer (0-based).
    head: attention head, or None for the mean over heads.
  """
  weights: np.ndarray
  source_tokens: List[str]
  target_tokens: List[str]
  prediction: str
  layer: int
  head: Optional[int]


def _transformer_weights(model, params, batch, *, layer: int) -> jnp.ndarray:
  """(B, H, T, S) cross-attention weights of decoder layer `layer`."""
  num_layers = model.config.num_decoder_layers
  if not -num_layers <= layer < num_layers:
    raise inference.ToolError(f'--layer={layer}: the decoder has {num_layers} layers '
                              f'(0..{num_layers - 1}, or -1 for the last)')
  layer %= num_layers
  if getattr(model.config, 'scan_layers', False):  # capture per layer: unroll the stacks
    model = model.clone(config=dataclasses.replace(model.config, scan_layers=False))
    params = transformer.scanned_to_unstacked(params)
  _, variables = model.apply(
      {'params': params}, batch, train=False, mutable=['intermediates'],
      capture_intermediates=lambda mdl, method: method == '__call__' and mdl.name in ('query', 'key'))
  cross = variables['intermediates']['decoder'][f'layer_{layer}']['cross_attention']
  q = cross['query']['__call__'][0]  # (B, T, H, Dh)
  k = cross['key']['__call__'][0]  # (B, S, H, Dh)
  inputs, targets = batch['inputs'], batch['targets']
  mask = layers.attention_mask(jnp.ones_like(targets, dtype=bool), inputs > 0)  # (B, 1, T, S)
  s = k.shape[1]
  one_hot = jnp.broadcast_to(jnp.eye(s, dtype=k.dtype)[None, :, None, :],
                             k.shape[:3] + (s,))  # (B, S, H, S): value of key j = e_j
  out = attention.dot_product_attention(q, k, one_hot, mask, None, 0.0, True,
                                        model.config.jnp_dtype)  # (B, T, H, S)
  return jnp.transpose(out, (0, 2, 1, 3)).astype(jnp.float32)  # (B, H, T, S)


def _lstm_weights(model, params, batch, *, layer: int) -> jnp.ndarray:
  """(B, 1, T, S): the LSTM decoder's single attention."""
  if layer not in (0, -1):
    raise inference.ToolError(f'--layer={layer}: the LSTM decoder has one attention; use --layer=0')
  if model.config.attention == 'none':
    raise inference.ToolError('this LSTM has config.model.attention=none: nothing to plot')
  _, variables = model.apply({'params': params}, batch, train=False, mutable=['intermediates'])
  return variables['intermediates']['attention_weights'][0][:, None]  # (B, 1, T, S)


# config.model.family → (model, params, batch, layer) -> (B, H, T, S) weights.
EXTRACTORS: Dict[str, Callable[..., jnp.ndarray]] = {
    'transformer': _transformer_weights,
    'lstm': _lstm_weights,
}


def token_label(tokenizer, token_id: int) -> str:
  """Axis label of one id: the special token names, else the id decoded on its own."""
  specials = {0: tok_lib.PAD, tok_lib.EOS_ID: tok_lib.EOS, tok_lib.UNK_ID: tok_lib.UNK}
  token_id = int(token_id)
  return specials.get(token_id) or tokenizer.decode([token_id]) or repr(tokenizer.decode([token_id]))


def cross_attention(run: inference.Run, params, text: str, layer: int = -1,
                    head: int = 0) -> AttentionMap:
  """Greedy-decodes `text` and returns the cross-attention of one layer and head.

  Args:
    run: the loaded workdir.
    params: parameters from `run.restore`.
    text: source sentence (truncated to the model's input length).
    layer: decoder layer; -1 = the last.
    head: head index; -1 = mean over heads.

  Returns:
    The AttentionMap.
  """
  family = run.config.model.family
  if family not in EXTRACTORS or run.config.model.kind != 'encdec':
    raise inference.ToolError(f'attention plots need an encdec model of family {sorted(EXTRACTORS)}; '
                              f'{run.workdir} has {family}/{run.config.model.kind}')
  options = inference.DecodeOptions(batch_size=1)
  source, _ = run.encode_line(text, options)
  if not source:
    raise inference.ToolError('--text is empty: give a source sentence')
  ids = run.decode_ids(params, [source], options)[0]  # (L,)
  eos = np.flatnonzero(ids == 1)
  num_out = int(eos[0]) + 1 if eos.size else len(ids)
  batch = {'inputs': np.asarray([source], np.int32), 'targets': np.asarray([ids], np.int32)}
  extract = jax.jit(functools.partial(EXTRACTORS[family], run.model, layer=layer))
  weights = extract(params, batch)
  weights = np.asarray(jax.device_get(weights))[0]  # (H, T, S)
  num_heads = weights.shape[0]
  if not -1 <= head < num_heads:
    raise inference.ToolError(f'--head={head}: the layer has {num_heads} heads (0..{num_heads - 1}, '
                              'or -1 for their mean)')
  matrix = weights.mean(0) if head == -1 else weights[head]  # (T, S)
  num_layers = run.config.model.get('num_decoder_layers', 1) if family == 'transformer' else 1
  tok_in, tok_out = run.task.tokenizers['inputs'], run.task.tokenizers['targets']
  if getattr(tok_in, 'level', '') == 'word':  # the words as written, unknown ones included
    source_tokens = text.split()[:len(source)]
  else:
    source_tokens = [token_label(tok_in, i) for i in source]
  return AttentionMap(weights=matrix[:num_out, :len(source)],
                      source_tokens=source_tokens,
                      target_tokens=[token_label(tok_out, i) for i in ids[:num_out]],
                      prediction=run.task.detokenize(ids),
                      layer=layer % num_layers, head=None if head == -1 else head)


def save_heatmap(attn: AttentionMap, path: str, title: str = '') -> str:
  """Writes the map as a PNG heatmap (rows = target tokens, columns = source tokens).

  Args:
    attn: the attention map.
    path: output PNG file.
    title: figure title.

  Returns:
    The path written.
  """
  num_out, num_src = attn.weights.shape
  fig = figure.Figure(figsize=(max(4.0, 0.45 * num_src + 2.0), max(3.0, 0.4 * num_out + 1.8)))
  ax = fig.add_subplot()
  image = ax.imshow(attn.weights, cmap='viridis', vmin=0.0, vmax=1.0, aspect='auto')
  ax.set_xticks(range(num_src), attn.source_tokens, rotation=90)
  ax.set_yticks(range(num_out), attn.target_tokens)
  ax.set_xlabel('source tokens')
  ax.set_ylabel('target tokens (greedy)')
  ax.set_title(title, fontsize=9)
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, format='png', dpi=100)
  fileio.makedirs(fileio.parent(path))
  fileio.write_bytes(path, png.getvalue())
  return path


def plot_workdir(workdir: str, text: str, output: str, layer: int = -1, head: int = 0,
                 checkpoint: str = 'latest') -> AttentionMap:
  """Loads `workdir`, decodes `text` and writes its cross-attention heatmap to `output`.

  Args:
    workdir: training run directory.
    text: source sentence.
    output: PNG path.
    layer: decoder layer (-1 = last).
    head: head (-1 = mean over heads).
    checkpoint: 'latest', 'best', 'averaged' or a step.

  Returns:
    The AttentionMap that was drawn.
  """
  if not output.lower().endswith('.png'):
    raise inference.ToolError(f'--output={output}: must be a .png file')
  run = inference.Run(workdir)
  params, info = run.restore(checkpoint)
  attn = cross_attention(run, params, text, layer, head)
  heads = 'mean of heads' if attn.head is None else f'head {attn.head}'
  save_heatmap(attn, output, f'{run.config.model.family} cross-attention, layer {attn.layer}, '
                             f'{heads} ({info.label})')
  return attn
