"""Raw-text data sources: local files (parallel, monolingual, TSV, CoNLL, documents with
summaries) and TensorFlow Datasets.

Every reader returns plain Python strings (and labels); tokenizing is the task's job.
Bad input raises `DataError` naming the file, the line and the problem.
"""

import gzip
import importlib
import re
import tarfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

from lmjax import fileio


class DataError(ValueError):
  """A data file is missing or malformed; the message names the file, line and fix."""


ENCODING_HINT = ('set config.task.source.encoding_errors="replace" to replace undecodable bytes '
                 'with U+FFFD, or re-encode the file as UTF-8')


def _check_exists(path: str) -> None:
  try:
    fileio.check_url(path, 'data file')
    found, folder = fileio.exists(path), fileio.isdir(path)
  except Exception as e:  # pylint: disable=broad-except  (each storage backend has its own)
    raise DataError(f'{path}: cannot be read ({fileio.first_line(e)})') from None
  if not found:
    raise DataError(f'{path}: file not found (check the data directory given as the config '
                    'argument, e.g. configs/x.py:/path/to/data)')
  if folder:
    raise DataError(f'{path}: is a directory, expected a file')


def open_data(path: str):
  """A binary file object reading `path` (local or a URL); '.gz' files are decompressed.

  Raises:
    DataError: the file is missing, a directory, or cannot be reached.
  """
  _check_exists(path)
  f = fileio.open_file(path, 'rb')
  if not path.endswith('.gz'):
    return f
  unzipped = gzip.GzipFile(fileobj=f, mode='rb')
  unzipped.myfileobj = f  # GzipFile closes `myfileobj` when it is closed
  return unzipped


def _decode(raw: bytes, path: str, lineno: int, errors: str) -> str:
  try:
    return raw.decode('utf-8', errors=errors)
  except UnicodeDecodeError as e:
    raise DataError(f'{path}:{lineno}: not valid UTF-8 (byte {raw[e.start:e.start + 1]!r} at '
                    f'column {e.start + 1}); {ENCODING_HINT}') from None


def _raw_lines(data: bytes) -> List[bytes]:
  lines = data.split(b'\n')
  if lines and lines[-1] == b'':
    lines.pop()
  return [l[:-1] if l.endswith(b'\r') else l for l in lines]


def read_bytes(path: str) -> bytes:
  """Contents of a plain or .gz file (clear errors for a missing or empty file)."""
  try:
    with open_data(path) as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise DataError(f'{path}: unreadable ({e})') from e
  if not data.strip():
    raise DataError(f'{path}: file is empty')
  return data


def read_lines(path: str, errors: str = 'strict') -> List[str]:
  """Lines of a UTF-8 text file (plain or .gz), without line endings.

  Args:
    path: file path; '.gz' files are decompressed.
    errors: 'strict' (a non-UTF-8 byte is an error naming the line) or 'replace'.

  Returns:
    The lines.
  """
  return [_decode(raw, path, i, errors) for i, raw in enumerate(_raw_lines(read_bytes(path)), 1)]


def read_document(path: str, errors: str = 'strict') -> str:
  """The whole file as one string (for character/stream language modelling)."""
  return '\n'.join(read_lines(path, errors)) + '\n'


def parallel_text(source_path: str, target_path: str, errors: str = 'strict'
                  ) -> List[Tuple[str, str]]:
  """Line-aligned (source, target) pairs from two files.

  Raises:
    DataError: when the files have different line counts (both are named).
  """
  src, tgt = read_lines(source_path, errors), read_lines(target_path, errors)
  if len(src) != len(tgt):
    raise DataError(f'parallel files are not line-aligned: {source_path} has {len(src)} lines '
                    f'but {target_path} has {len(tgt)}')
  return [(s.strip(), t.strip()) for s, t in zip(src, tgt)]


def monolingual_text(path: str, mode: str = 'line', errors: str = 'strict') -> List[str]:
  """Monolingual text: one example per non-empty line ('line') or the whole file ('document')."""
  if mode == 'line':
    return [l.strip() for l in read_lines(path, errors) if l.strip()]
  if mode == 'document':
    return [read_document(path, errors)]
  raise ValueError(f"monolingual mode must be 'line' or 'document', got {mode!r}")


def _parse_label(value: str, labels: Sequence[str], path: str, lineno: int) -> int:
  if value not in labels:
    raise DataError(f'{path}:{lineno}: label {value!r} is not in the configured label set '
                    f'{list(labels)} (config.task.source.labels)')
  return list(labels).index(value)


def tsv(path: str, labels: Sequence[str], num_text_columns: int = 1, header: str = 'auto',
        errors: str = 'strict') -> List[Tuple[Tuple[str, ...], int]]:
  """Tab-separated rows `text[<TAB>text]<TAB>label`.

  Args:
    path: the file.
    labels: the label set; a row's label string must be one of them (id = index).
    num_text_columns: 1 or 2 text columns before the label.
    header: 'auto' (the first row is a header when its label field is not a label),
      'yes' or 'no'.
    errors: UTF-8 decoding errors ('strict' or 'replace').

  Returns:
    (texts, label id) per row.
  """
  rows = []
  lines = read_lines(path, errors)
  width = num_text_columns + 1
  for lineno, line in enumerate(lines, 1):
    if not line.strip():
      continue
    fields = line.split('\t')
    if len(fields) != width:
      raise DataError(f'{path}:{lineno}: expected {width} tab-separated columns '
                      f'({num_text_columns} text + label), got {len(fields)}: {line[:80]!r}')
    label = fields[-1].strip()
    if lineno == 1 and (header == 'yes' or (header == 'auto' and label not in labels)):
      continue
    rows.append((tuple(f.strip() for f in fields[:-1]), _parse_label(label, labels, path, lineno)))
  if not rows:
    raise DataError(f'{path}: no data rows')
  return rows


def labeled_lines(path: str, labels: Sequence[str], errors: str = 'strict'
                  ) -> List[Tuple[Tuple[str], int]]:
  """Lines `<label> <text>` (the SST-2 'stsa.binary' format)."""
  rows = []
  for lineno, line in enumerate(read_lines(path, errors), 1):
    if not line.strip():
      continue
    parts = line.strip().split(None, 1)
    if len(parts) != 2:
      raise DataError(f'{path}:{lineno}: expected "<label> <text>", got {line[:80]!r}')
    rows.append(((parts[1],), _parse_label(parts[0], labels, path, lineno)))
  return rows


def conll(path: str, token_column: int = 0, tag_column: int = -1, errors: str = 'strict'
          ) -> List[Tuple[List[str], List[str]]]:
  """CoNLL columns: one `token … tag` line per token, a blank line between sentences.

  Returns:
    (tokens, tags) per sentence.
  """
  sentences, tokens, tags = [], [], []
  for lineno, line in enumerate(read_lines(path, errors), 1):
    if not line.strip():
      if tokens:
        sentences.append((tokens, tags))
      tokens, tags = [], []
      continue
    if line.startswith('-DOCSTART-'):
      continue
    fields = line.split('\t') if '\t' in line else line.split()
    if len(fields) < 2 or not fields[tag_column].strip():
      raise DataError(f'{path}:{lineno}: expected "token<TAB>tag" (CoNLL columns), got '
                      f'{line[:80]!r}: the tag is missing')
    tokens.append(fields[token_column].strip())
    tags.append(fields[tag_column].strip())
  if tokens:
    sentences.append((tokens, tags))
  return sentences


def parse_summary_document(text: str, name: str) -> Dict[str, Any]:
  """One AESLC-style document: body, then `@subject` and its line, then optional `@annN`."""
  parts = re.split(r'^@(\w+)[ \t]*$', text, flags=re.M)
  body, fields = parts[0].strip(), {}
  for key, value in zip(parts[1::2], parts[2::2]):
    fields[key] = ' '.join(value.split())
  if 'subject' not in fields:
    raise DataError(f'{name}: no "@subject" line (expected the body, then a line "@subject" '
                    'followed by the summary)')
  refs = [fields[k] for k in sorted(fields) if k.startswith('ann')]
  return {'document': ' '.join(body.split()), 'summary': fields['subject'],
          'annotations': refs, 'name': name}


def summaries(path: str, suffix: str = '.subject', errors: str = 'strict') -> List[Dict[str, Any]]:
  """Documents with summaries from a directory or a .tar.gz of `*.subject` files, sorted by name.

  Returns:
    Dicts with 'document', 'summary', 'annotations' (the `@annN` lines, possibly none),
    'name'.
  """
  docs = []
  if fileio.isdir(path):
    names = [n for n in fileio.listdir(path) if n.endswith(suffix)]
    for n in names:
      full = fileio.join(path, n)
      docs.append(parse_summary_document(
          '\n'.join(read_lines(full, errors)), full))
  else:
    try:
      with open_data(path) as f, tarfile.open(fileobj=f, mode='r:*') as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(suffix)),
                         key=lambda m: m.name)
        for m in members:
          raw = tar.extractfile(m).read()
          name = f'{path}:{m.name}'
          lines = [_decode(l, name, i, errors) for i, l in enumerate(_raw_lines(raw), 1)]
          docs.append(parse_summary_document('\n'.join(lines), name))
    except tarfile.TarError as e:
      raise DataError(f'{path}: not a readable tar archive ({e})') from e
  if not docs:
    raise DataError(f'{path}: no *{suffix} documents found')
  return docs


# Builders that TFDS registers only when their module is imported (without TensorFlow
# installed, `tfds.builder(name)` does not find them otherwise). Folder-style builders
# (imdb_reviews, lm1b, …) are found by name and need no entry.
TFDS_BUILDER_MODULES = {
    'wmt14_translate': 'tensorflow_datasets.translate.wmt14',
    'wmt15_translate': 'tensorflow_datasets.translate.wmt15',
    'wmt16_translate': 'tensorflow_datasets.translate.wmt16',
    'wmt17_translate': 'tensorflow_datasets.translate.wmt17',
    'wmt18_translate': 'tensorflow_datasets.translate.wmt18',
    'wmt19_translate': 'tensorflow_datasets.translate.wmt19',
    'glue': 'tensorflow_datasets.text.glue',
    'cnn_dailymail': 'tensorflow_datasets.summarization.cnn_dailymail',
}


def register_tfds_builder(name: str) -> None:
  """Imports the module that registers `name`'s TFDS builder, where one is needed."""
  base = name.split('/')[0].split(':')[0]
  if base in TFDS_BUILDER_MODULES:
    importlib.import_module(TFDS_BUILDER_MODULES[base])


def tfds_examples(name: str, split: str, data_dir: Optional[str] = None,
                  max_examples: int = 0) -> List[Dict[str, Any]]:
  """Examples of a TFDS dataset as dicts of Python values (bytes decoded to str).

  Goes through `tfds.data_source` when the prepared dataset supports random access
  (ArrayRecord; no TensorFlow needed), else `tfds.load` + `tfds.as_numpy` (needs
  TensorFlow). Prepares (downloads) the dataset if needed.

  Args:
    name: TFDS name, e.g. 'wmt14_translate/de-en'.
    split: split name, e.g. 'train', 'validation', 'train[:1%]'.
    data_dir: TFDS data directory (None: TFDS default, ~/tensorflow_datasets).
    max_examples: keep at most this many (0 = all).

  Returns:
    One dict per example.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(f'TFDS dataset {name!r} needs tensorflow-datasets: '
                    "pip install -e '.[tfds]'") from e
  register_tfds_builder(name)
  if max_examples:
    split = f'{split}[:{max_examples}]' if '[' not in split else split
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir)
    rows = (source[i] for i in range(len(source)))
  except Exception:  # pylint: disable=broad-except
    # Datasets prepared as TFRecord have no random access: read them through tf.data.
    ds = tfds.load(name, split=split, data_dir=data_dir)
    rows = tfds.as_numpy(ds)
  return [_to_python(r) for r in rows]


def _to_python(value):
  if isinstance(value, dict):
    return {k: _to_python(v) for k, v in value.items()}
  if isinstance(value, bytes):
    return value.decode('utf-8', errors='replace')
  if hasattr(value, 'item') and getattr(value, 'shape', None) == ():
    v = value.item()
    return v.decode('utf-8', errors='replace') if isinstance(v, bytes) else v
  if hasattr(value, 'tolist'):
    return value.tolist()
  return value
