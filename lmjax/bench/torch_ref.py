"""PyTorch references (eager; CPU, or CUDA for experiments/device_check.sh): nn.Transformer
and nn.LSTM at the lmjax benchmark shapes.

Each mirrors the lmjax model and its config: pre-LN (norm_first) Transformer with one
shared embedding scaled by sqrt(D), sinusoidal positions, tied output logits
(h @ embᵀ), dropout on embeddings/residuals/MLP (attention dropout as lmjax's
`attention_dropout_rate`), causal target mask (nn.MultiheadAttention runs
`F.scaled_dot_product_attention`, with `is_causal` for the target), label-smoothed cross-entropy; the LSTM
LM is embedding → dropout → nn.LSTM (dropout between layers) → dropout → tied or
linear logits. The optimizer follows `config.optimizer` (Adam/AdamW/SGD, clipping) at a
constant learning rate. Needs the `[bench]` extra (torch). The printed losses are not
comparable with lmjax's under label smoothing: lmjax subtracts the smoothed target
distribution's entropy (a constant) so that a perfect prediction scores 0.
"""

import math
import os
import time
import warnings
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lmjax.models import layers


def setup_threads() -> int:
  """Uses every CPU for intra-op parallelism (as XLA does). Returns the thread count."""
  torch.set_num_threads(os.cpu_count() or 1)
  return torch.get_num_threads()


def shift_right(targets: torch.Tensor) -> torch.Tensor:
  """(B, T) → (B, T) decoder inputs with BOS = 0 in front (lmjax.models.layers.shift_right)."""
  return F.pad(targets, (1, 0))[:, :-1]


class Seq2SeqTransformer(nn.Module):
  """nn.Transformer encoder-decoder with a shared, tied embedding."""

  def __init__(self, model: Mapping[str, Any], vocab_size: int):
    super().__init__()
    d = model['emb_dim']
    self.scale = math.sqrt(d)
    self.embed = nn.Embedding(vocab_size, d)
    nn.init.normal_(self.embed.weight, std=d ** -0.5)
    table = layers.sinusoidal_table(model['max_len'], d)  # (max_len, D)
    self.register_buffer('positions', torch.from_numpy(table))
    self.dropout = nn.Dropout(model['dropout_rate'])
    with warnings.catch_warnings():  # norm_first disables the nested-tensor fast path
      warnings.simplefilter('ignore')
      self.transformer = nn.Transformer(
          d, model['num_heads'], model['num_encoder_layers'], model['num_decoder_layers'],
          model['mlp_dim'], model['dropout_rate'], batch_first=True, norm_first=True)
    for module in self.modules():
      if isinstance(module, nn.MultiheadAttention):
        module.dropout = model['attention_dropout_rate']

  def _embed(self, ids: torch.Tensor) -> torch.Tensor:
    x = self.embed(ids) * self.scale + self.positions[:ids.shape[1]]  # (B, L, D)
    return self.dropout(x)

  def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """inputs (B, S), targets (B, T) int64 → logits (B, T, V)."""
    t = targets.shape[1]
    mask = nn.Transformer.generate_square_subsequent_mask(t, device=targets.device)  # (T, T)
    h = self.transformer(self._embed(inputs), self._embed(shift_right(targets)), tgt_mask=mask,
                         tgt_is_causal=True)  # (B, T, D)
    return h @ self.embed.weight.T  # (B, T, V)


class LSTMLanguageModel(nn.Module):
  """Embedding → dropout → nn.LSTM → dropout → tied (h @ embᵀ) or linear logits."""

  def __init__(self, model: Mapping[str, Any], vocab_size: int):
    super().__init__()
    e, h, p = model['emb_dim'], model['hidden_dim'], model['dropout_rate']
    self.embed = nn.Embedding(vocab_size, e)
    self.dropout = nn.Dropout(p)
    self.lstm = nn.LSTM(e, h, model['num_layers'], batch_first=True,
                        dropout=p if model['num_layers'] > 1 else 0.0)
    self.tied = model['tie_output']
    self.projection = nn.Linear(h, e, bias=False) if self.tied and h != e else None
    self.logits = None if self.tied else nn.Linear(h, vocab_size)

  def forward(self, targets: torch.Tensor) -> torch.Tensor:
    """targets (B, T) int64 → next-token logits (B, T, V)."""
    x = self.dropout(self.embed(shift_right(targets)))  # (B, T, E)
    y, _ = self.lstm(x)  # (B, T, H)
    y = self.dropout(y)
    if not self.tied:
      return self.logits(y)
    if self.projection is not None:
      y = self.projection(y)
    return y @ self.embed.weight.T  # (B, T, V)


def make_optimizer(params, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
  """The torch optimizer of `config.optimizer` at its peak learning rate.

  Raises:
    ValueError: an optimizer without a torch counterpart here (adafactor).
  """
  name, lr = cfg['name'], cfg['learning_rate']
  if name == 'adam':
    return torch.optim.Adam(params, lr, betas=(cfg['b1'], cfg['b2']), eps=cfg['eps'])
  if name == 'adamw':
    return torch.optim.AdamW(params, lr, betas=(cfg['b1'], cfg['b2']), eps=cfg['eps'],
                             weight_decay=cfg['weight_decay'])
  if name == 'sgd':
    return torch.optim.SGD(params, lr, momentum=cfg['b1'])
  raise ValueError(f'config.optimizer.name={name!r} has no PyTorch reference here; '
                   "use 'adam', 'adamw' or 'sgd'")


def time_train(model: nn.Module, batch: Dict[str, np.ndarray], config, steps: int,
               warmup: int, precision: str = 'float32',
               device: str = 'cpu') -> Tuple[List[float], float]:
  """Times eager train steps (forward, label-smoothed CE, backward, clip, update).

  Args:
    model: a Seq2SeqTransformer (batch has 'inputs') or LSTMLanguageModel.
    batch: numpy int32 {'targets': (B, T)[, 'inputs': (B, S)]}.
    config: experiment config (optimizer, train.label_smoothing).
    steps: timed steps.
    warmup: untimed steps first.
    precision: 'float32', or 'bfloat16' for the forward pass under
      `torch.autocast(device, torch.bfloat16)` (PyTorch's mixed precision: bf16 matmuls,
      float32 params, optimizer and loss).
    device: 'cpu' or 'cuda' (the model is moved there; each step ends with `loss.item()`,
      which waits for the device).

  Returns:
    (seconds of each timed step, loss of the last step).
  """
  torch.manual_seed(0)
  model.to(device)
  model.train()
  opt = make_optimizer(model.parameters(), config.optimizer)
  loss_fn = nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)
  tensors = {k: torch.from_numpy(v.astype(np.int64)).to(device) for k, v in batch.items()}
  targets = tensors['targets']
  clip = config.optimizer.grad_clip_norm

  if precision not in ('float32', 'bfloat16'):
    raise ValueError(f"precision {precision!r}: expected 'float32' or 'bfloat16'")
  autocast = precision == 'bfloat16'

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
      if 'inputs' in tensors:
        logits = model(tensors['inputs'], targets)
      else:
        logits = model(targets)  # (B, T, V)
      loss = loss_fn(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))  # f32 under autocast
    loss.backward()
    if clip > 0:
      nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss.item()

  for _ in range(warmup):
    step()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - start)
  return times, loss
