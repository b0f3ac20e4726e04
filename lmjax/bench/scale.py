r"""Corpus-scale benchmark of the streaming data path (benchmark_pipeline.py --scale).

Corpora in SCALE_DIR, deterministic in the seed and reused while their line counts match:
  pairs-<bank>-s<seed>-<N>/multi30k/tok/*.lc.norm.tok.{en,de}: N aligned pairs of 15-40
    words a side, each 2-3 bank pairs joined (val: 64 more), laid out as
    configs/multi30k_transformer.py reads them. Lines come in chunks of CHUNK, each from
    its own RNG stream, so every corpus is a prefix of any larger one of the same seed.
  lines-<bank>-s<seed>-<N>.txt: N monolingual lines of 15-40 words (bank source sides).
The bank is Multi30k's training split ('m30k', ../shared/data beside the repository) or,
without it, synthetic pairs of made-up words ('synth').
"""

import dataclasses
import json
import os
import shutil
import subprocess
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, 'configs', 'multi30k_transformer.py')
M30K = 'multi30k/tok/{}.lc.norm.tok.{}'
MIN_WORDS, MAX_WORDS = 15, 40
CHUNK = 100_000  # lines per RNG stream: n lines are a prefix of any longer corpus
EVAL_PAIRS = 64
GOAL_FIRST_STEP_S, GOAL_RSS_RATIO, GOAL_TOKENS_PER_S = 30.0, 1.25, 300_000
# Start-up runs: a 1+1-layer d=32 Transformer, 16 packed rows, 3 steps, tiny eval.
TRAIN_OVERRIDES = {
    'model.emb_dim': 32, 'model.qkv_dim': 32, 'model.mlp_dim': 64, 'model.num_encoder_layers': 1,
    'model.num_decoder_layers': 1, 'task.batching.mode': 'pack', 'train.batch_size': 16,
    'task.source.max_eval_examples': 16, 'eval.batch_size': 16, 'eval.decode_max_length': 8,
    'eval.num_samples': 1, 'optimizer.warmup_steps': 1, 'train.log_every': 1,
    'train.num_train_steps': 3, 'train.eval_every': 10**6, 'train.checkpoint_every': 10**6}


@dataclasses.dataclass
class Bank:
  """Aligned sentence pairs that corpus lines are joined from.

  Attributes:
    name: 'm30k' or 'synth' (part of the corpus names).
    source: source sentences (bytes, no newline).
    target: the aligned target sentences.
  """
  name: str
  source: List[bytes]
  target: List[bytes]

  def __post_init__(self):
    sides = (self.source, self.target)
    self.words = [np.array([len(s.split()) for s in side]) for side in sides]
    # (sentence, ' ' + sentence) object arrays ending in b'' (an unused slot): a line is
    # then two vectorised additions of whole columns.
    self.parts = [(np.array(s + [b''], object), np.array([b' ' + x for x in s] + [b''], object))
                  for s in sides]


def shared_data_dir() -> Optional[str]:
  """../shared/data beside the repository when it holds Multi30k, else None."""
  path = os.path.join(os.path.dirname(REPO), 'shared', 'data')
  ok = all(os.path.isfile(os.path.join(path, M30K.format('train', l))) for l in ('en', 'de'))
  return path if ok else None


def load_bank(data_dir: Optional[str], seed: int = 0) -> Bank:
  """Multi30k's training pairs under `data_dir`, or `synthetic_bank(seed)` if it is None."""
  if data_dir is None:
    return synthetic_bank(seed)
  sides = []
  for lang in ('en', 'de'):
    with open(os.path.join(data_dir, M30K.format('train', lang)), 'rb') as f:
      sides.append([line.strip() for line in f.read().split(b'\n')[:-1]])
  pairs = [(s, t) for s, t in zip(*sides) if s and t]
  return Bank('m30k', [s for s, _ in pairs], [t for _, t in pairs])


def synthetic_bank(seed: int = 0, size: int = 20_000) -> Bank:
  """Pairs of 5-20 made-up words (5,000 a language, Zipf) plus '.', translated word for word.

  Args:
    seed: random seed.
    size: pairs.

  Returns:
    The Bank, named 'synth'.
  """
  rng, vocab = np.random.default_rng([seed, 7]), 5_000
  syllables = [c + v for c in 'bcdfghklmnprstvz' for v in 'aeiou']
  words = [[''.join(rng.choice(syllables, n)).encode() for n in rng.integers(1, 4, vocab)]
           for _ in range(2)]
  p = 1.0 / np.arange(1, vocab + 1)
  ids = rng.choice(vocab, size * 20, p=p / p.sum())
  lengths = rng.integers(5, 21, size)
  ends = np.cumsum(lengths)
  sides = [[b' '.join([w[i] for i in ids[a:b]] + [b'.']) for a, b in zip(ends - lengths, ends)]
           for w in words]
  return Bank('synth', *sides)


def pick(bank: Bank, seed: int, stream: int, chunk: int, sides: int = 2) -> np.ndarray:
  """Bank indices of the CHUNK lines of one chunk: 2 or 3 pairs each (1 if 2 are too long).

  Args:
    bank: the sentence bank.
    seed: corpus seed.
    stream: 0 parallel corpus, 1 monolingual, 2 eval pairs.
    chunk: chunk number (its lines are chunk * CHUNK onwards).
    sides: 2 = both sides must have MIN_WORDS..MAX_WORDS words, 1 = the source side.

  Returns:
    int array [CHUNK, 3]; len(bank.source) marks an unused slot.
  """
  rng = np.random.default_rng([seed, stream, chunk])
  size, out, todo = len(bank.source), np.empty((CHUNK, 3), np.int64), np.arange(CHUNK)
  while todo.size:  # rejection sampling, vectorised
    idx = rng.integers(0, size, (todo.size, 3))
    cum = [np.cumsum(w[idx], axis=1) for w in bank.words[:sides]]
    fits = np.all([c <= MAX_WORDS for c in cum], axis=0).sum(axis=1)  # cumsums: monotone
    k = np.minimum(rng.integers(2, 4, todo.size), fits)
    last = (np.arange(todo.size), np.maximum(k, 1) - 1)
    ok = (k > 0) & np.all([c[last] >= MIN_WORDS for c in cum], axis=0)
    idx[np.arange(3) >= k[:, None]] = size
    out[todo[ok]] = idx[ok]
    todo = todo[~ok]
  return out


def write_lines(paths: Sequence[str], bank: Bank, n: int, seed: int, stream: int) -> None:
  """Writes n lines to each path: [source] or [source, target] (aligned), via .tmp files.

  Args:
    paths: 1 or 2 output files.
    bank: the sentence bank.
    n: lines.
    seed: corpus seed.
    stream: RNG stream (see `pick`).
  """
  files = [open(p + '.tmp', 'wb') for p in paths]
  try:
    for chunk in range(-(-n // CHUNK)):
      picks = pick(bank, seed, stream, chunk, len(paths))[:n - chunk * CHUNK]
      for (first, rest), f in zip(bank.parts, files):
        f.write(b'\n'.join((first[picks[:, 0]] + rest[picks[:, 1]] + rest[picks[:, 2]]).tolist()))
        f.write(b'\n')
  finally:
    for f in files:
      f.close()
  for p in paths:
    os.replace(p + '.tmp', p)


def count_lines(path: str) -> int:
  """Newlines in `path` (-1 if it does not exist)."""
  if not os.path.exists(path):
    return -1
  with open(path, 'rb') as f:
    return sum(block.count(b'\n') for block in iter(lambda: f.read(1 << 24), b''))


def make_corpora(scale_dir: str, pairs: Sequence[int], lines: int, seed: int,
                 bank: Bank) -> Dict[str, Any]:
  """Writes the corpora (see the module docstring) that are missing or of another length.

  Args:
    scale_dir: output root.
    pairs: parallel corpus sizes.
    lines: monolingual corpus lines (0 = none).
    seed: corpus seed.
    bank: the sentence bank.

  Returns:
    {'pairs': {N: data dir}, 'lines': path or None, 'seconds': time taken}.
  """
  start, dirs = time.perf_counter(), {}
  for n in sorted(set(pairs)):
    dirs[n] = os.path.join(scale_dir, f'pairs-{bank.name}-s{seed}-{n}')
    os.makedirs(os.path.join(dirs[n], 'multi30k', 'tok'), exist_ok=True)
    for split, size, stream in (('train', n, 0), ('val', EVAL_PAIRS, 2)):
      paths = [os.path.join(dirs[n], M30K.format(split, l)) for l in ('en', 'de')]
      if any(count_lines(p) != size for p in paths):
        write_lines(paths, bank, size, seed, stream)
  mono = os.path.join(scale_dir, f'lines-{bank.name}-s{seed}-{lines}.txt') if lines else None
  if mono and count_lines(mono) != lines:
    write_lines([mono], bank, lines, seed, 1)
  return {'pairs': dirs, 'lines': mono, 'seconds': time.perf_counter() - start}


def preprocess(task, root: str, examples: int, sentences_per_example: int) -> Dict[str, Any]:
  """text_tasks.preprocess_task(task, root), timed; a folder already there is reused.

  Args:
    task: config.task of a streamable task.
    root: preprocessed-data root.
    examples: raw examples (pairs or lines) of the corpus.
    sentences_per_example: 2 for pairs (source + target), 1 for LM lines.

  Returns:
    {'source', 'examples', 'records' (after the length filter), 'seconds' (a reused
    folder: the build time in its index.json), 'sentences_per_s', 'cached'}.
  """
  from lmjax.data import preprocess as prep_lib  # pylint: disable=g-import-not-at-top
  from lmjax.data import text_tasks  # pylint: disable=g-import-not-at-top
  cached = os.path.exists(os.path.join(root, prep_lib.cache_key(task)))
  start = time.perf_counter()
  source = text_tasks.preprocess_task(task, root)
  seconds = source.index['seconds'] if cached else time.perf_counter() - start
  return {'source': source, 'examples': examples, 'records': source.index['num_examples'],
          'seconds': seconds, 'sentences_per_s': examples * sentences_per_example / seconds,
          'cached': cached}


def time_train_start(data_dir: str, overrides: Dict[str, Any], workdir: str, cache_dir: str,
                     timeout: float = 1800.0) -> Dict[str, float]:
  """Runs experiments/train.py once (output in WORKDIR/train.log) and times its first step.

  Args:
    data_dir: the config argument (a pairs-* folder).
    overrides: config fields (dotted) for the command line.
    workdir: a fresh run directory.
    cache_dir: JAX persistent compilation cache shared by the runs.
    timeout: seconds before the run is killed.

  Returns:
    {'first_step_s': launch to the time of the step-1 train record, 'peak_rss_mib':
    ru_maxrss of the run from wait4 (the process; no Grain workers run), 'total_s'}.
  """
  from lmjax.train import soak  # pylint: disable=g-import-not-at-top
  os.makedirs(workdir)
  cmd = soak.train_command(f'{CONFIG}:{data_dir}', workdir,
                           [f'--config.{k}={v}' for k, v in overrides.items()])
  metrics, log_path = os.path.join(workdir, 'metrics.jsonl'), os.path.join(workdir, 'train.log')
  first = None
  with open(log_path, 'wb') as log:
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env=soak.subprocess_env(cache_dir), stdout=log,
                            stderr=subprocess.STDOUT)
    try:
      while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if first is None and os.path.exists(metrics):
          with open(metrics, encoding='utf-8') as f:
            rows = [json.loads(l) for l in f if l.endswith('\n')]
          first = next((r['time'] for r in rows if r['split'] == 'train'), None)
        if pid:
          proc.returncode = os.waitstatus_to_exitcode(status)
          break
        if time.time() - start > timeout:
          proc.kill()
        time.sleep(0.1)
    except BaseException:  # interrupted: do not leave the run behind
      proc.kill()
      proc.wait()
      raise
  total = time.time() - start
  with open(log_path, 'rb') as f:
    out = f.read().decode(errors='replace')
  if proc.returncode or first is None or 'Preprocessing ' in out:  # a cache miss preprocesses
    raise RuntimeError(f'{" ".join(cmd)}: exit {proc.returncode}, first step seen: '
                       f'{first is not None}\n{out[-3000:]}')
  return {'first_step_s': first - start, 'peak_rss_mib': usage.ru_maxrss / 1024, 'total_s': total}


def time_packed(source, workers: int, batches: int) -> Dict[str, float]:
  """Packed 256 x (256 + 256)-token batches/s of stream.from_records on one host.

  Args:
    source: a parallel records.RecordSource.
    workers: Grain worker processes.
    batches: batches timed, after 3 + 2 * workers untimed ones (start-up; they also empty
      the workers' 2-batch buffers, filled while the first batches were awaited).

  Returns:
    {'tokens_per_s' (inputs and targets != 0), 'batches_per_s', 'seconds'}.
  """
  from lmjax.data import stream  # pylint: disable=g-import-not-at-top
  it = stream.from_records(source, global_batch_size=256, seed=0, batching={'mode': 'pack'},
                           lengths={'inputs': 256, 'targets': 256}, workers=workers)
  try:
    for _ in range(3 + 2 * workers):
      next(it)
    tokens, start = 0, time.perf_counter()
    for _ in range(batches):
      b = next(it)
      tokens += int(np.count_nonzero(b['inputs'])) + int(np.count_nonzero(b['targets']))
    seconds = time.perf_counter() - start
  finally:
    it.close()
  return {'tokens_per_s': tokens / seconds, 'batches_per_s': batches / seconds, 'seconds': seconds}


def format_table(results: Dict[str, Any]) -> str:
  """The results of `run` as one aligned table, goals and whether they are met included."""
  yes = lambda ok: 'yes' if ok else 'NO'
  rows = [('measurement', 'examples', 'seconds', 'rate', 'peak RSS MiB', 'x smallest', 'goal',
           'met')]
  for p in results['preprocess']:
    rows.append((f"preprocess {p['corpus']}{' (cached)' if p['cached'] else ''}",
                 f"{p['examples']:,}", f"{p['seconds']:.1f}",
                 f"{p['sentences_per_s']:,.0f} sent/s", '-', '-', '-', ''))
  for t in results['train_start']:
    ok = t['first_step_s'] < GOAL_FIRST_STEP_S and t['rss_ratio'] <= GOAL_RSS_RATIO
    rows.append((f"train.py first step{' (cold cache)' if t['cold'] else ''}",
                 f"{t['pairs']:,}", f"{t['first_step_s']:.1f}", '-', f"{t['peak_rss_mib']:.0f}",
                 f"{t['rss_ratio']:.2f}", f'< {GOAL_FIRST_STEP_S:.0f} s, RSS <= {GOAL_RSS_RATIO}x',
                 yes(ok)))
  for r in results['throughput']:
    goal = r['workers'] == 2
    rows.append((f"pack 256x(256+256), {r['workers']} workers", f"{r['pairs']:,}",
                 f"{r['seconds']:.1f}", f"{r['tokens_per_s']:,.0f} tok/s, "
                 f"{r['batches_per_s']:.2f} b/s", '-', '-',
                 f'>= {GOAL_TOKENS_PER_S:,} tok/s' if goal else '-',
                 yes(r['tokens_per_s'] >= GOAL_TOKENS_PER_S) if goal else ''))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ['  '.join(c.ljust(w) if i in (0, 3, 6) else c.rjust(w)
                     for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
  return '\n'.join(lines[:1] + ['-' * max(map(len, lines))] + lines[1:] + [
      'preprocess: text_tasks.preprocess_task wall time (sample, SentencePiece, tokenize, write);\n'
      '  sentences = 2 a pair (source + target), 1 an LM line.',
      'train.py: launch to the step-1 record; peak RSS: ru_maxrss of the train process (no\n'
      '  Grain workers); x smallest: vs the smallest corpus, with a warm compilation cache.',
      'pack: source + target non-padding tokens/s and batches/s on one host, largest corpus.'])


def run(scale_dir: str, pairs: Sequence[int], lines: int, workers: Sequence[int], batches: int,
        spm_sentences: int, seed: int = 0) -> Dict[str, Any]:
  """Makes the corpora, preprocesses them, times train start-up and packed batches.

  Args:
    scale_dir: holds the corpora, preprocessed/, runs/, jax_cache/ and scale_results.json.
    pairs: parallel corpus sizes.
    lines: monolingual corpus lines (0 = none).
    workers: Grain worker counts of the throughput rows.
    batches: batches timed per worker count.
    spm_sentences: config.task.tokenizer.max_sentences.
    seed: corpus seed.

  Returns:
    The results (also written to SCALE_DIR/scale_results.json), for `format_table`.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  from lmjax.config import configlib  # pylint: disable=g-import-not-at-top
  bank = load_bank(shared_data_dir(), seed)
  corpora = make_corpora(scale_dir, pairs, lines, seed, bank)
  print(f'corpora ({bank.name} bank) ready in {corpora["seconds"]:.1f} s in {scale_dir}',
        flush=True)
  root = os.path.join(scale_dir, 'preprocessed')
  data = {'task.max_input_length': 256, 'task.max_target_length': 256, 'model.max_len': 256,
          'task.tokenizer.model_type': 'bpe', 'task.tokenizer.vocab_size': 8000,
          'task.tokenizer.max_sentences': spm_sentences, 'task.preprocessed_dir': root,
          'task.preprocess_workers': 0}  # one per CPU
  results = {'bank': bank.name, 'seed': seed, 'corpora_seconds': corpora['seconds'],
             'preprocess': [], 'train_start': [], 'throughput': [],
             'goals': {'first_step_s': GOAL_FIRST_STEP_S, 'rss_ratio': GOAL_RSS_RATIO,
                       'tokens_per_s_2_workers': GOAL_TOKENS_PER_S}}
  configs, sources = [], {}
  for n in sorted(set(pairs)):
    config = configlib.load_config_file(f'{CONFIG}:{corpora["pairs"][n]}')
    configs.append((config, n, 2, f'{n:,} pairs'))
  if lines:
    text_task = configlib.config_module(os.path.join(REPO, 'configs', 'text_task.py'))
    config = ml_collections.ConfigDict({'task': text_task.task_config('text_lm', ''),
                                        'model': {'max_len': 256}})
    config.task.source.type, config.task.source.train_files = 'monolingual', [corpora['lines']]
    configs.append((config, lines, 1, f'{lines:,} LM lines'))
  for config, n, per, name in configs:
    config.update_from_flattened_dict(data)
    p = preprocess(config.task, root, n, per)
    sources[name] = p.pop('source')
    results['preprocess'].append(dict(p, corpus=name))
    print(f'preprocessed {name} in {p["seconds"]:.1f} s', flush=True)
  cache = os.path.join(scale_dir, 'jax_cache')
  # An empty cache: the smallest corpus runs twice, the cold-compile run first.
  cold = not (os.path.isdir(cache) and os.listdir(cache))
  overrides = dict(data, **TRAIN_OVERRIDES)
  for i, n in enumerate(([min(pairs)] if cold else []) + sorted(set(pairs))):
    workdir = os.path.join(scale_dir, 'runs', f'pairs{n}-{i}')
    shutil.rmtree(workdir, ignore_errors=True)
    t = time_train_start(corpora['pairs'][n], overrides, workdir, cache)
    results['train_start'].append(dict(t, pairs=n, cold=cold and i == 0))
    print(f'train.py on {n:,} pairs: step 1 after {t["first_step_s"]:.1f} s, peak RSS '
          f'{t["peak_rss_mib"]:.0f} MiB', flush=True)
  base = next(t for t in results['train_start'] if not t['cold'])['peak_rss_mib']
  for t in results['train_start']:
    t['rss_ratio'] = t['peak_rss_mib'] / base
  for w in workers:
    r = time_packed(sources[f'{max(pairs):,} pairs'], w, batches)
    results['throughput'].append(dict(r, workers=w, pairs=max(pairs)))
    print(f'pack, {w} workers: {r["tokens_per_s"]:,.0f} tokens/s', flush=True)
  with open(os.path.join(scale_dir, 'scale_results.json'), 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=1)
  return results
