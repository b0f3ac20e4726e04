"""Kill-and-resume soak: SIGKILL a training run at random moments, relaunch it, compare.

A run killed N times (during a step, a background checkpoint save or a metrics write)
and relaunched with the same command each time must end with the same parameters,
bit for bit, and the same train metrics as a run that was never interrupted.
`experiments/soak_kill.py` is the command line; tests/reliability_test.py runs a short one.
"""

import dataclasses
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import numpy as np

from lmjax.train import reporting
from lmjax.train import checkpoint as ckpt_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Train-row fields that measure the machine, not the training.
TIMING_FIELDS = ('time', 'tokens_per_sec')


@dataclasses.dataclass
class Kill:
  """One SIGKILL and what it left behind.

  Attributes:
    index: 1-based.
    delay: seconds between the launch (or, with wait_for_progress, the launch's first
      train row; for a launch with a damage pending, the moment after its first train row
      when the run had two complete checkpoints) and the SIGKILL.
    seen_step: newest step in metrics.jsonl when the signal was sent.
    checkpoint: newest complete checkpoint afterwards (None: none yet).
    partial: partial checkpoint directories the kill left (Orbax tmp dirs, incomplete steps).
    finished: the run had already finished, so there was nothing to kill.
    damaged: how the newest checkpoint was damaged after the kill ('' = not).
  """
  index: int
  delay: float
  seen_step: int
  checkpoint: Optional[int]
  partial: int
  finished: bool = False
  damaged: str = ''


def train_command(config: str, workdir: str, overrides: Sequence[str] = ()) -> List[str]:
  """The experiments/train.py command line.

  Args:
    config: config spec, e.g. 'configs/default.py:runlocal'.
    workdir: run directory.
    overrides: extra flags, e.g. ['--config.train.num_train_steps=50'].

  Returns:
    argv for subprocess.
  """
  return [sys.executable, os.path.join(REPO, 'experiments', 'train.py'), f'--config={config}',
          f'--workdir={workdir}', *overrides]


def subprocess_env(compilation_cache: Optional[str] = None) -> Dict[str, str]:
  """This environment plus PYTHONPATH=repo and, optionally, JAX's persistent compilation cache.

  The cache makes relaunches compile in seconds; the cached executables are the ones
  the first launch compiled, so results stay bit-identical.
  """
  env = dict(os.environ, PYTHONPATH=REPO)
  if compilation_cache:
    env.update(JAX_COMPILATION_CACHE_DIR=compilation_cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  return env


# start(cmd, env, log_path) -> a started launch: its own session and process group, stdout
# and stderr to log_path; the launch has `pid`, `poll()` and `wait(timeout)` as
# subprocess.Popen has (the default is a subprocess.Popen; tests pass one that forks the
# command from a server that imported jax once, tests/scripts.py).
Start = Callable[[Sequence[str], Dict[str, str], str], Any]


def popen(cmd: Sequence[str], env: Dict[str, str], log_path: str) -> subprocess.Popen:
  """The default `Start`: a subprocess in its own session (SIGKILL takes its workers too)."""
  with open(log_path, 'wb') as log:
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log,
                            start_new_session=True)


def _log_tail(log_path: str) -> str:
  with open(log_path, 'rb') as f:
    return f.read().decode(errors='replace')[-3000:]


def _kill_group(proc) -> None:
  """SIGKILLs the launch's process group (the run and its data-loader workers)."""
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:  # not yet its own group leader, or already gone
    if proc.poll() is None:
      os.kill(proc.pid, signal.SIGKILL)


def _wait(proc, timeout: float) -> Optional[int]:
  """Waits up to `timeout` s; the exit status, or None (still running)."""
  try:
    proc.wait(timeout)
  except subprocess.TimeoutExpired:
    pass
  return proc.poll()


def run_to_completion(cmd: Sequence[str], env: Dict[str, str], timeout: float,
                      start: Optional[Start] = None) -> None:
  """Runs `cmd` (see `Start`); raises RuntimeError with its output tail when it fails."""
  with tempfile.TemporaryDirectory(prefix='lmjax-soak-') as logs:
    log = os.path.join(logs, 'launch.log')
    proc = (start or popen)(cmd, env, log)
    code = _wait(proc, timeout)
    if code is None:
      _kill_group(proc)
      _wait(proc, 60)
      raise RuntimeError(f'{" ".join(cmd)} ran past {timeout} s:\n{_log_tail(log)}')
    if code != 0:
      raise RuntimeError(f'{" ".join(cmd)} exited with {code}:\n{_log_tail(log)}')


def _complete_steps(workdir: str) -> List[str]:
  """Step directory names in WORKDIR/checkpoints/last that Orbax committed, oldest first.

  A plain listing, unlike ckpt_lib.complete_steps (an Orbax manager per call): kill_and_resume
  polls it while a launch runs.
  """
  directory = os.path.join(workdir, 'checkpoints', 'last')
  if not os.path.isdir(directory):
    return []
  return sorted((n for n in os.listdir(directory) if n.isdigit() and
                 os.path.exists(os.path.join(directory, n, ckpt_lib.COMMIT_FILE))), key=int)


def latest_complete_checkpoint(workdir: str) -> Optional[int]:
  """Newest step in WORKDIR/checkpoints/last that Orbax committed (None: none)."""
  steps = _complete_steps(workdir)
  return int(steps[-1]) if steps else None


def partial_checkpoints(workdir: str) -> List[str]:
  """Orbax tmp directories and uncommitted step directories under WORKDIR/checkpoints."""
  found = []
  for slot in ('last', 'best'):
    directory = os.path.join(workdir, 'checkpoints', slot)
    if os.path.isdir(directory):
      found += [os.path.join(directory, n) for n in os.listdir(directory) if '.orbax-checkpoint-tmp' in n]
      found += [os.path.join(directory, n) for n in ckpt_lib.incomplete_steps(directory)]
  return sorted(found)


class _Metrics:
  """WORKDIR/metrics.jsonl as a launch writes it, re-read only when the file changed.

  kill_and_resume polls it every few milliseconds while a launch runs; most polls find
  the file as it was (same inode, size and modification time) and parse nothing.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._key = None
    self._rows: List[Dict] = []

  def rows(self) -> List[Dict]:
    """The parseable records (`reporting.read_jsonl`)."""
    try:
      st = os.stat(self.path)
    except FileNotFoundError:
      self._key, self._rows = None, []
      return self._rows
    key = (st.st_ino, st.st_size, st.st_mtime_ns)
    if key != self._key:
      rows = reporting.read_jsonl(self.path)
      self._key, self._rows = key, rows
    return self._rows

  def train_rows_since(self, since: float) -> List[Dict]:
    return [r for r in self.rows() if r.get('split') == 'train' and r.get('time', 0) >= since]

  def newest_step(self, since: float = 0.0) -> int:
    """The newest step of the records written at or after `since` (time.time())."""
    return max((r['step'] for r in self.rows() if r.get('time', 0) >= since), default=0)


def _wait_while_running(proc, until: Callable[[], bool], deadline: float) -> None:
  """Polls `until()` while `proc` runs, until it holds or `deadline` (time.time()) passes."""
  while proc.poll() is None and time.time() < deadline and not until():
    time.sleep(0.02)


DAMAGE_KINDS = ('truncate', 'manifest')


def damage_checkpoint(step_dir: str, kind: str) -> str:
  """Damages a checkpoint as a failing disk or an interrupted copy would.

  Args:
    step_dir: WORKDIR/checkpoints/last/<step>.
    kind: 'truncate' (the array data files cut to half) or 'manifest' (every OCDBT
      manifest of the state emptied).

  Returns:
    The file(s) damaged, for the report.
  """
  files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, 'state')) for f in fs]
  if kind == 'truncate':
    # Every array data file: OCDBT files may end in bytes no array reads, so cutting one
    # file short does not always make the checkpoint unreadable.
    targets = [f for f in files if f'{os.sep}d{os.sep}' in f]
    for f in targets:
      with open(f, 'r+b') as fh:
        fh.truncate(os.path.getsize(f) // 2)
    return ', '.join(targets)
  if kind == 'manifest':
    targets = [f for f in files if os.path.basename(f) == 'manifest.ocdbt']
    for f in targets:
      open(f, 'wb').close()
    return ', '.join(targets)
  raise ValueError(f'damage kind must be one of {DAMAGE_KINDS}, got {kind!r}')


def kill_and_resume(cmd: Sequence[str], workdir: str, kills: int, seed: int, max_delay: float,
                    env: Dict[str, str], wait_for_progress: bool = False, min_delay: float = 0.0,
                    timeout: float = 600.0, damage: Optional[Dict[int, str]] = None,
                    kill_by_step: Optional[int] = None, start: Optional[Start] = None) -> List[Kill]:
  """Launches `cmd` `kills` times, SIGKILLs each at a random moment, then lets it finish.

  Args:
    cmd: the training command (its --workdir is `workdir`).
    workdir: run directory.
    kills: how many launches to kill.
    seed: seeds the random delays.
    max_delay: delays are uniform in [min_delay, max_delay] seconds.
    env: environment of the launches.
    wait_for_progress: count the delay from the launch's first train row (so the kill
      lands in training) instead of from the launch (anywhere: start-up, compile, ...).
      Launches with a damage pending always wait, see `damage`.
    min_delay: see max_delay.
    timeout: seconds any one launch may take.
    damage: kill index → damage kind: after that kill, the newest complete checkpoint is
      damaged (`damage_checkpoint`), and the run must fall back to an older one
      (train.checkpoint_fallback). So that one exists, the launch counts its delay from
      the moment, after its first train row (when any earlier damage has been set
      aside), that WORKDIR/checkpoints/last holds two complete checkpoints. Only a launch
      that ends on its own before then leaves its damage to the next kill.
    kill_by_step: if set, a launch that logs this step (a metrics.jsonl record of its own)
      before its delay is over is killed then: the kill still lands in a live run (steps
      to go) however fast the machine trains, so a short run can be soaked with delays in
      seconds.
    start: how a launch is started (`Start`; default `popen`, a subprocess).

  Returns:
    One Kill per launch killed.

  Raises:
    RuntimeError: a launch failed on its own, or the final one did not finish.
  """
  rng = random.Random(seed)
  damage = dict(damage or {})
  record = []
  metrics = _Metrics(workdir)
  start = start or popen
  with tempfile.TemporaryDirectory(prefix='lmjax-soak-') as logs:
    for index in range(1, kills + 1):
      launched = time.time()
      log = os.path.join(logs, f'launch-{index}.log')
      # Its own process group: the kill takes the run's data-loader workers with it, as a
      # preempted machine would (a worker that outlived it would hold its output open).
      proc = start(cmd, env, log)
      delay = rng.uniform(min_delay, max_delay)
      damage_due = any(k <= index for k in damage)
      t = launched
      if wait_for_progress or damage_due:
        _wait_while_running(proc, lambda: bool(metrics.train_rows_since(launched)),
                            launched + timeout)
        if damage_due:
          _wait_while_running(proc, lambda: len(_complete_steps(workdir)) >= 2, launched + timeout)
        t = time.time()
      while proc.poll() is None and time.time() < t + delay:
        if kill_by_step is not None and metrics.newest_step(since=launched) >= kill_by_step:
          break
        time.sleep(0.01)
      finished = proc.poll() is not None
      if not finished:
        _kill_group(proc)
      code = _wait(proc, timeout)
      if finished and code != 0:
        raise RuntimeError(f'launch {index} failed (exit {code}):\n{_log_tail(log)}')
      done = ''
      pending = sorted(k for k in damage if k <= index)
      complete = _complete_steps(workdir)
      if pending and len(complete) >= 2 and not finished:
        kind = damage.pop(pending[0])
        damage_checkpoint(os.path.join(workdir, 'checkpoints', 'last', complete[-1]), kind)
        done = f'{kind} step {complete[-1]}'
      record.append(Kill(index, round(delay, 2), metrics.newest_step(),
                         latest_complete_checkpoint(workdir), len(partial_checkpoints(workdir)),
                         finished, done))
  run_to_completion(cmd, env, timeout, start)
  return record


def train_rows(workdir: str) -> List[Dict]:
  """The train rows of metrics.jsonl without the timing fields."""
  return [{k: v for k, v in r.items() if k not in TIMING_FIELDS}
          for r in reporting.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
          if r['split'] == 'train']


def compare(straight: str, resumed: str) -> Dict[str, object]:
  """Compares the final checkpoints and train metrics of two workdirs.

  Returns:
    {'step': (straight, resumed) checkpoint steps, 'params_identical': bool,
     'max_abs_diff': float, 'train_rows': (n, n), 'metrics_identical': bool}.
  """
  a, step_a = ckpt_lib.load_params(straight)
  b, step_b = ckpt_lib.load_params(resumed)
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  same_tree = jax.tree.structure(a) == jax.tree.structure(b)
  identical = same_tree and all(np.array_equal(np.asarray(x), np.asarray(y))
                                for x, y in zip(leaves_a, leaves_b))
  diff = max((float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
              for x, y in zip(leaves_a, leaves_b)), default=0.0) if same_tree else float('inf')
  rows_a, rows_b = train_rows(straight), train_rows(resumed)
  return {'step': (step_a, step_b), 'params_identical': identical, 'max_abs_diff': diff,
          'train_rows': (len(rows_a), len(rows_b)), 'metrics_identical': rows_a == rows_b}


def format_report(kills: Sequence[Kill], comparison: Dict[str, object]) -> str:
  """A table of the kills and the verdict."""
  lines = [f'{"kill":>4} {"delay s":>8} {"seen step":>9} {"checkpoint":>10} {"partial":>7}  note',
           '-' * 52]
  for k in kills:
    note = 'had finished' if k.finished else ('left a partial save (ignored)' if k.partial else '')
    if k.damaged:
      note = (note + '; ' if note else '') + f'then damaged ({k.damaged})'
    lines.append(f'{k.index:>4} {k.delay:>8.2f} {k.seen_step:>9} {str(k.checkpoint):>10} '
                 f'{k.partial:>7}  {note}')
  c = comparison
  lines += ['-' * 52,
            f'final checkpoint step: uninterrupted {c["step"][0]}, killed+resumed {c["step"][1]}',
            f'parameters bit-identical: {c["params_identical"]} (max |diff| {c["max_abs_diff"]:.3g})',
            f'train metrics identical: {c["metrics_identical"]} '
            f'({c["train_rows"][0]} vs {c["train_rows"][1]} rows, timing fields excluded)']
  return '\n'.join(lines)
