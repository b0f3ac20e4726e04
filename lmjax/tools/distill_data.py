"""Sequence-level knowledge distillation (Kim & Rush, 2016): the student trains on the
teacher's beam-search translations of the training sources.

`distill` (experiments/distill.py) decodes the student task's training sources with the
teacher's beam search, caches them as a parallel corpus beside the student's data, points
the student config's config.task.source.train_files at it and trains the student with the
normal trainer (`lmjax.train.loop.train_and_evaluate`); the eval and test splits stay as
they are. The corpus goes through the text_seq2seq task path like any parallel files.

Layout (a folder per teacher checkpoint, decoding settings and source file):

    <folder of the training source or --corpus_dir>/distilled-<key>/
        manifest.json          what produced it
        chunks/00000.txt ...   teacher outputs of source lines [i·C, (i+1)·C)
        <source file name>     the source lines (the first max_train_examples, or all)
        <target file name>     the teacher outputs, line-aligned; written last

Each chunk appears whole (written to a temporary name, then renamed), so a killed run
continues with the first missing chunk. Chunks hold whole batches and batches have one
fixed shape, so a resumed corpus is byte-identical to an uninterrupted one.
"""

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import tqdm

from lmjax import fileio
from lmjax.config import configlib
from lmjax.data import sources
from lmjax.tools.inference import DecodeOptions, Run, ToolError
from lmjax.train import loop

VERSION = 1  # of the corpus layout; part of the key


@dataclasses.dataclass(frozen=True)
class Corpus:
  """Where a distilled corpus lives and what it holds.

  Attributes:
    directory: the distilled-<key> folder.
    source_file: the student's training source file it translates.
    num_lines: source lines translated (from the first).
    chunk_lines: lines per chunk (a multiple of the decoding batch size).
    manifest: teacher, checkpoint, decoding options, source file; its hash is the key.
    files: [source copy, teacher outputs], the corpus's parallel files.
  """
  directory: str
  source_file: str
  num_lines: int
  chunk_lines: int
  manifest: Dict[str, Any]
  files: Tuple[str, str]

  @property
  def num_chunks(self) -> int:
    return -(-self.num_lines // self.chunk_lines)

  def chunk_path(self, index: int) -> str:
    return fileio.join(self.directory, 'chunks', f'{index:05d}.txt')

  @property
  def complete(self) -> bool:
    return all(fileio.isfile(f) for f in self.files)


def training_files(config) -> Tuple[str, str]:
  """The student's [source, target] training files (absolute or relative to the cwd).

  Raises:
    ToolError: the task does not read a parallel corpus from files.
  """
  task = config.task
  src = task.get('source')
  kind = src and (src.get('train_type') or src.get('type'))
  if task.get('name') != 'text_seq2seq' or kind != 'parallel' or len(src.train_files) != 2:
    raise ToolError(f'--config: sequence-level distillation trains a text_seq2seq student on '
                    f'[source, target] files; this config has config.task.name='
                    f"{task.get('name')!r}" + (f', config.task.source.type={kind!r}' if src else ''))
  return tuple(fileio.join(task.data_dir, f) if task.data_dir else f for f in src.train_files)


def plan(config, teacher: Run, checkpoint_label: str, options: DecodeOptions,
         corpus_dir: str = '', chunk_lines: int = 1024) -> Corpus:
  """The corpus of `config`'s training sources translated by `teacher` (not yet written).

  Args:
    config: the student's config.
    teacher: the teacher's Run.
    checkpoint_label: the restored checkpoint (CheckpointInfo.label), part of the key.
    options: decoding options (beam_size, alpha, batch_size, max_length).
    corpus_dir: folder for distilled-<key>/ ('' = beside the training source file).
    chunk_lines: lines per chunk; rounded up to a multiple of options.batch_size.

  Returns:
    The Corpus.
  """
  source_file, target_file = training_files(config)
  if not fileio.isfile(source_file):
    raise ToolError(f'config.task.source.train_files[0]: {source_file} not found')
  limit = config.task.source.max_train_examples
  lines = _source_lines(source_file, limit)
  chunk = -(-max(chunk_lines, 1) // options.batch_size) * options.batch_size
  digest = hashlib.sha256(fileio.read_bytes(source_file)).hexdigest()
  manifest = {'version': VERSION, 'teacher': fileio.resolve(teacher.workdir),
              'checkpoint': checkpoint_label, 'source_file': fileio.resolve(source_file),
              'source_sha256': digest, 'num_lines': len(lines), 'chunk_lines': chunk,
              'decoding': {'beam_size': options.beam_size, 'alpha': options.alpha,
                           'batch_size': options.batch_size,
                           'max_length': teacher.decode_length(options.max_length)}}
  key = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:12]
  directory = fileio.join(corpus_dir or fileio.parent(source_file), f'distilled-{key}')
  files = tuple(fileio.join(directory, fileio.basename(f).removesuffix('.gz'))
                for f in (source_file, target_file))
  return Corpus(directory, source_file, len(lines), chunk, manifest, files)


def _source_lines(path: str, limit: int) -> List[str]:
  lines = sources.read_lines(path)
  return lines[:limit] if limit else lines


def generate(corpus: Corpus, teacher: Run, params, options: DecodeOptions,
             progress: bool = True, max_chunks: Optional[int] = None,
             warn: Callable[[str], None] = print) -> bool:
  """Decodes the chunks that are missing, then writes the corpus files.

  Args:
    corpus: from `plan`.
    teacher: its Run; params: its restored parameters.
    options: decoding options (as given to `plan`).
    progress: show a progress bar (sentences).
    max_chunks: decode at most this many chunks in this call (an interruption, for tests).
    warn: receives one summary line when sources were truncated to the teacher's length.

  Returns:
    Whether the corpus is complete.
  """
  fileio.makedirs(fileio.join(corpus.directory, 'chunks'))
  manifest = fileio.join(corpus.directory, 'manifest.json')
  if not fileio.isfile(manifest):
    fileio.write_text(manifest, json.dumps(corpus.manifest, indent=2, sort_keys=True) + '\n')
  if corpus.complete:
    return True
  lines = _source_lines(corpus.source_file, corpus.num_lines)
  todo = [i for i in range(corpus.num_chunks) if not fileio.isfile(corpus.chunk_path(i))]
  done = corpus.num_lines - sum(len(lines[i * corpus.chunk_lines:(i + 1) * corpus.chunk_lines])
                                for i in todo)
  truncated: List[str] = []
  bar = tqdm.tqdm(total=corpus.num_lines, initial=done, unit=' sentences', desc='distilling',
                  disable=not progress, dynamic_ncols=True)
  try:
    for n, i in enumerate(todo):
      if max_chunks is not None and n >= max_chunks:
        return False
      chunk = lines[i * corpus.chunk_lines:(i + 1) * corpus.chunk_lines]
      outputs = list(teacher.decode_lines(params, chunk, options, truncated.append))
      fileio.write_text(corpus.chunk_path(i), ''.join(o + '\n' for o in outputs))  # whole
      bar.update(len(chunk))
  finally:
    bar.close()
  if truncated:
    warn(f'distill: {len(truncated)} source lines were longer than the teacher takes and were '
         f'truncated (first: {truncated[0]})')
  _assemble(corpus, lines)
  return True


def _assemble(corpus: Corpus, lines: List[str]) -> None:
  """Writes the source copy, then the concatenated teacher outputs (the completion mark)."""
  outputs = []
  for i in range(corpus.num_chunks):
    outputs.extend(fileio.read_text(corpus.chunk_path(i)).splitlines())
  if len(outputs) != len(lines):
    raise ToolError(f'{corpus.directory}/chunks hold {len(outputs)} lines for {len(lines)} '
                    'sources: delete the folder and rerun')
  fileio.write_text(corpus.files[0], ''.join(line + '\n' for line in lines))
  fileio.write_text(corpus.files[1], ''.join(o + '\n' for o in outputs))


def student_config(config, corpus: Corpus):
  """`config` with config.task.source.train_files pointed at the corpus (in place).

  The paths are relative to config.task.data_dir when the corpus lies inside it.
  """
  data_dir = config.task.data_dir
  def name(path):
    if data_dir and not fileio.is_remote(path):
      rel = os.path.relpath(path, fileio.resolve(data_dir))
      return path if rel.startswith('..') else rel
    return path
  config.task.source.train_files = [name(f) for f in corpus.files]
  return config


def distill(teacher_workdir: str, config, workdir: str, checkpoint: str = 'latest',
            options: DecodeOptions = DecodeOptions(beam_size=5), corpus_dir: str = '',
            chunk_lines: int = 1024, train: bool = True, progress: bool = True) -> Dict[str, Any]:
  """Writes (or reuses) the distilled corpus, then trains the student on it.

  Args:
    teacher_workdir: the trained teacher's run directory.
    config: the student's config (a text_seq2seq task on parallel files); its
      train_files are replaced by the corpus's.
    workdir: the student's run directory (rerun the same call to resume it).
    checkpoint: the teacher's checkpoint ('latest', 'best', 'averaged' or a step).
    options: the teacher's decoding (beam search: beam_size > 1).
    corpus_dir: folder for distilled-<key>/ ('' = beside the training source file).
    chunk_lines: sentences per resumable chunk.
    train: train the student after writing the corpus (False: only the corpus).
    progress: progress bars.

  Returns:
    {'corpus': [source file, target file], 'metrics': the student's final eval metrics
    (absent when not training)}.
  """
  configlib.validate(config, check_paths=True)
  options.validate()
  training_files(config)  # a student this can train, before the teacher loads
  teacher = Run(teacher_workdir)
  params, info = teacher.restore(checkpoint)
  corpus = plan(config, teacher, info.label, options, corpus_dir, chunk_lines)
  print(f'distilled corpus ({corpus.num_lines} sentences, teacher {teacher_workdir} '
        f'checkpoint {info.label}, beam {options.beam_size}): {corpus.directory}', flush=True)
  generate(corpus, teacher, params, options, progress)
  del params, teacher
  student_config(config, corpus)
  out: Dict[str, Any] = {'corpus': list(corpus.files)}
  if train:
    out['metrics'] = loop.train_and_evaluate(config, workdir)
  return out
