"""Metric writers (TensorBoard + JSONL), progress bar and PNG plots."""

import io
import json
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Mapping, Optional

import tqdm

from lmjax import fileio
from lmjax.train import guard


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without PyTorch.

  tensorboardX imports torch when it is installed (to accept torch tensors), ~3 s and
  ~300 MB per process that writes scalars; lmjax passes floats. Unless something already
  imported torch, the import is hidden from tensorboardX only (later imports see it).
  """
  if 'tensorboardX' not in sys.modules and 'torch' not in sys.modules:
    sys.modules['torch'] = None  # `import torch` raises ImportError inside tensorboardX
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    finally:
      del sys.modules['torch']
    return SummaryWriter
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  return SummaryWriter


class MetricWriter:
  """Writes scalars to TensorBoard (WORKDIR/tensorboard) and WORKDIR/metrics.jsonl.

  Only the main process writes; the workdir may be a URL (gs://…, see lmjax.fileio), then
  TensorBoard's event files are written to a local folder and copied to
  WORKDIR/tensorboard at every flush. Each JSONL line is
  {"step": int, "split": "train"|"eval"|..., "time": float, <metric>: float, ...}.
  A crash leaves at most a torn last line, repaired when the run resumes; a failed
  write (full disk) raises `guard.WriteError` naming the file and leaves no torn line.
  """

  def __init__(self, workdir: str, enabled: bool = True, resume_step: Optional[int] = None):
    """Opens the writers.

    Args:
      workdir: run directory.
      enabled: False on every process but the main one (then nothing is written).
      resume_step: the step the run resumes from (0 for a fresh start): records after it,
        written by a run that stopped before its next checkpoint, are dropped, and
        TensorBoard hides its events after it (the event files are kept). None keeps all.

    Raises:
      guard.WriteError: metrics.jsonl cannot be repaired or rewritten.
    """
    self.enabled = enabled
    self.path = fileio.join(workdir, 'metrics.jsonl')
    self._tb = None
    self._tb_remote = None
    if enabled:
      summary_writer = _summary_writer_class()
      try:
        repair_jsonl(self.path)
        if resume_step is not None:
          self.truncate_after(resume_step)
      except OSError as e:
        raise guard.write_error(e, self.path, 'metrics file') from e
      tb_dir = fileio.join(workdir, 'tensorboard')
      old_events = bool(fileio.listdir(tb_dir))
      purge = resume_step + 1 if resume_step is not None and old_events else None
      if fileio.is_remote(tb_dir):  # tensorboardX writes local files; flush() copies them
        self._tb_remote, tb_dir = tb_dir, tempfile.mkdtemp(prefix='lmjax-tensorboard-')
      self._tb = summary_writer(tb_dir, purge_step=purge)

  def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
    """Appends one record and mirrors it to TensorBoard as `<split>/<name>`.

    Raises:
      guard.WriteError: metrics.jsonl could not be written (the file is left as it was).
    """
    if not self.enabled:
      return
    record = {'step': int(step), 'split': split, 'time': time.time()}
    record.update({k: float(v) for k, v in scalars.items()})
    try:
      append_line(self.path, json.dumps(record) + '\n')
    except OSError as e:
      raise guard.write_error(e, self.path, 'metrics file') from e
    for k, v in scalars.items():
      self._tb.add_scalar(f'{split}/{k}', float(v), int(step))

  def write_text(self, step: int, tag: str, text: str) -> None:
    if self.enabled:
      self._tb.add_text(tag, text, int(step))

  def truncate_after(self, step: int) -> None:
    """Drops records newer than `step` (written after the checkpoint we resume from)."""
    if not self.enabled or not fileio.exists(self.path):
      return
    records = read_jsonl(self.path)
    kept = [r for r in records if r['step'] <= step]
    if len(kept) != len(records):
      fileio.write_text(self.path, ''.join(json.dumps(r) + '\n' for r in kept))

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()
      if self._tb_remote:
        fileio.upload_tree(self._tb.logdir, self._tb_remote)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      if self._tb_remote:
        fileio.upload_tree(self._tb.logdir, self._tb_remote)
        shutil.rmtree(self._tb.logdir, ignore_errors=True)  # local disk: the staging copy
        self._tb_remote = None


def append_line(path: str, line: str) -> None:
  """Appends `line`; when the write fails the file is cut back to its old size (no torn
  line; one left by a crash is repaired by repair_jsonl at the next start).

  Raises:
    OSError: the write failed.
  """
  fileio.append_text(path, line)


def read_jsonl(path: str) -> List[Dict]:
  """Reads metrics.jsonl, skipping a torn (incomplete) last line."""
  records = []
  if not fileio.exists(path):
    return records
  with fileio.open_file(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


def repair_jsonl(path: str) -> None:
  """Rewrites metrics.jsonl without unparseable lines (e.g. torn by a crash)."""
  if not fileio.exists(path):
    return
  lines = io.StringIO(fileio.read_text(path)).readlines()
  good = [line for line in lines if _parses(line)]
  if len(good) != len(lines) or (lines and not lines[-1].endswith('\n')):
    fileio.write_text(path, ''.join(line if line.endswith('\n') else line + '\n'
                                    for line in good))


def _parses(line: str) -> bool:
  try:
    json.loads(line)
    return True
  except json.JSONDecodeError:
    return False


def progress(total: int, initial: int, enabled: bool) -> tqdm.tqdm:
  """Progress bar over training steps (shows steps, rate and ETA; loss/tok/s as postfix)."""
  return tqdm.tqdm(total=total, initial=initial, disable=not enabled, dynamic_ncols=True,
                   unit='step', desc='train', mininterval=1.0)


VAE_PLOTTED = ('kl', 'rec', 'elbo', 'kl_weight')


def _plot_vae(ax, records) -> None:
  """KL and reconstruction NLL (nats per sentence) of train and eval records, one axis each."""
  for split, style in (('train', '-'), ('eval', 'o-')):
    pts = [r for r in records if r['split'] == split]
    if pts:
      ax.plot([r['step'] for r in pts], [r['rec'] for r in pts], style, label=f'{split} reconstruction')
  ax.set_xlabel('step')
  ax.set_ylabel('reconstruction NLL (nats / sentence)')
  kl_ax = ax.twinx()
  for split, style in (('train', '--'), ('eval', 's--')):
    pts = [r for r in records if r['split'] == split]
    if pts:
      kl_ax.plot([r['step'] for r in pts], [r['kl'] for r in pts], style, color='tab:red',
                 label=f'{split} KL')
  kl_ax.set_ylabel('KL (nats / sentence)')
  ax.legend(loc='upper left')
  kl_ax.legend(loc='upper right')
  ax.set_title('VAE: reconstruction and KL')


def plot_curves(metrics_path: str, out_path: str) -> Optional[str]:
  """PNG of training loss and eval metrics over steps (a VAE's KL and reconstruction NLL
  per sentence in a third panel).

  Args:
    metrics_path: metrics.jsonl.
    out_path: PNG to write.

  Returns:
    out_path, or None when there is nothing to plot.
  """
  records = read_jsonl(metrics_path)
  # NLL, not the training loss: label smoothing shifts the latter, eval has none.
  train = [r for r in records if r['split'] == 'train' and 'nll' in r]
  evals = [r for r in records if r['split'] == 'eval']
  if not train and not evals:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  vae = [r for r in records if 'kl' in r and 'rec' in r]
  eval_keys = sorted({k for r in evals for k in r} - {'step', 'split', 'time', 'loss', 'nll',
                                                       'perplexity'} - set(VAE_PLOTTED))
  fig, axes = plt.subplots(1, 3 if vae else 2, figsize=(16 if vae else 11, 4))
  if vae:
    _plot_vae(axes[2], vae)
  if train:
    axes[0].plot([r['step'] for r in train], [r['nll'] for r in train], label='train NLL')
  ev_loss = [r for r in evals if 'nll' in r]
  if ev_loss:
    axes[0].plot([r['step'] for r in ev_loss], [r['nll'] for r in ev_loss], 'o-', label='eval NLL')
  axes[0].set_xlabel('step')
  axes[0].set_ylabel('negative log-likelihood per token')
  axes[0].set_yscale('log')
  axes[0].legend()
  for k in eval_keys:
    pts = [r for r in evals if k in r]
    axes[1].plot([r['step'] for r in pts], [r[k] for r in pts], 'o-', label=k)
  axes[1].set_xlabel('step')
  axes[1].set_title('eval metrics')
  if eval_keys:
    axes[1].legend()
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, format='png', dpi=100)
  plt.close(fig)
  fileio.write_bytes(out_path, png.getvalue())
  return out_path
