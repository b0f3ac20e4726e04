"""The one path layer: every workdir and data file lmjax reads or writes goes through here.

Paths are `etils.epath` paths (Orbax's own path library), so a `gs://bucket/run` workdir
(or any other epath backend: s3://, az://, hf://) works wherever a local directory does.
Local paths are made absolute (Orbax needs that); URLs are left as they are.

Atomic writes: on a local disk a file is written beside its target and renamed over it,
so a crash leaves the old file or the new one, never half of one. Object stores (GCS,
S3) have no rename, but they publish an object only when its upload is complete: the same
guarantee holds with one direct write. Appends (metrics.jsonl) are native on local disks;
on object stores the object is rewritten whole (metric files stay small).
"""

import contextlib
import functools
import importlib.util
import io
import os
import socket
import tempfile
from typing import IO, Iterator, List, Union

from etils import epath

PathLike = Union[str, os.PathLike]

# Schemes epath serves (through fsspec: gcsfs for gs://, s3fs for s3://, ...).
REMOTE_SCHEMES = ('gs', 's3', 'az', 'hf')


class PathError(ValueError):
  """A path lmjax cannot serve (unknown URL scheme, or its backend is not installed)."""


def first_line(error: BaseException) -> str:
  """'<ErrorType>: <first line of its message>' (backends raise long, nested messages)."""
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0]}' if text else type(error).__name__


def scheme(path: PathLike) -> str:
  """'gs' for 'gs://b/x', '' for a local path."""
  text = os.fspath(path)
  head, sep, _ = text.partition('://')
  return head if sep and head.isalnum() else ''


def is_remote(path: PathLike) -> bool:
  """True for a URL (gs://, s3://, ...), False for a local path."""
  return bool(scheme(path))


# The client library epath (through fsspec) needs for each scheme, and the host its storage
# answers on: a quick check before the library's own retries, which take minutes (and log
# a traceback per retry) when there is no network.
LIBRARIES = {'gs': 'gcsfs', 's3': 's3fs', 'az': 'adlfs', 'hf': 'huggingface_hub'}
ENDPOINTS = {'gs': ('storage.googleapis.com', 443), 's3': ('s3.amazonaws.com', 443)}


def check_url(path: PathLike, what: str = 'path', timeout: float = 5.0) -> None:
  """For a URL: its scheme is served, its client library is installed and its storage
  answers; a local path passes. Call before the first read or write of a user's path.

  Args:
    path: the path or URL.
    what: the flag or field that gave it, for the message (e.g. '--workdir').
    timeout: seconds to wait for the storage host.

  Raises:
    PathError: one line naming `what`, the URL, what is wrong and the fix.
  """
  s = scheme(path)
  if not s:
    return
  text = os.fspath(path)
  if s not in REMOTE_SCHEMES:
    raise PathError(f'{what}={text}: unsupported URL scheme {s}://; expected a local path '
                    f'or one of {", ".join(x + "://" for x in REMOTE_SCHEMES)}')
  library = LIBRARIES.get(s)
  if library and importlib.util.find_spec(library) is None:
    raise PathError(f"{what}={text}: {s}:// paths need the {library} package: pip install "
                    f"'lmjax[gcs]' (or pip install {library})")
  endpoint = ENDPOINTS.get(s)
  if endpoint is None or (s == 'gs' and os.environ.get('STORAGE_EMULATOR_HOST')):
    return
  try:
    _probe(endpoint, timeout)
  except OSError as e:
    raise PathError(f'{what}={text}: cannot reach {endpoint[0]} ({e.strerror or e}); {s}:// '
                    'needs a network connection (or use a local path)') from None


@functools.lru_cache(maxsize=None)
def _probe(endpoint, timeout: float) -> None:
  """Connects once to `endpoint`; a success is remembered for the process (every data file
  of a run is checked, the host only once), a failure raises and is tried again next time."""
  socket.create_connection(endpoint, timeout=timeout).close()


def path(p: PathLike) -> epath.Path:
  """The epath.Path of `p`: URLs as they are, local paths absolute with ~ expanded."""
  text = os.fspath(p)
  if is_remote(text):
    if scheme(text) not in REMOTE_SCHEMES:
      raise PathError(f'{text}: unsupported URL scheme; expected a local path or one of '
                      f'{", ".join(x + "://" for x in REMOTE_SCHEMES)}')
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def resolve(p: PathLike) -> str:
  """`path(p)` as a string (what configs, reports and log lines show)."""
  return os.fspath(path(p))


def join(base: PathLike, *parts: str) -> str:
  """`base`/`parts` as a string; a URL keeps its scheme (os.path.join would too, but
  os.path.abspath would not)."""
  return os.fspath(epath.Path(os.fspath(base)).joinpath(*parts)) if is_remote(base) else \
      os.path.join(os.fspath(base), *parts)


def parent(p: PathLike) -> str:
  """The directory holding `p`."""
  return os.fspath(path(p).parent)


def basename(p: PathLike) -> str:
  return path(p).name


def exists(p: PathLike) -> bool:
  return path(p).exists()


def isdir(p: PathLike) -> bool:
  return path(p).is_dir()


def isfile(p: PathLike) -> bool:
  q = path(p)
  return q.exists() and not q.is_dir()


def listdir(p: PathLike) -> List[str]:
  """Sorted entry names of directory `p` ([] when it does not exist)."""
  q = path(p)
  if not q.is_dir():
    return []
  return sorted(c.name for c in q.iterdir())


def makedirs(p: PathLike) -> None:
  """Creates directory `p` and its parents (no error when it exists)."""
  path(p).mkdir(parents=True, exist_ok=True)


def getsize(p: PathLike) -> int:
  """Size of file `p` in bytes."""
  return path(p).stat().length


def remove(p: PathLike) -> None:
  """Deletes file `p` (no error when it is already gone)."""
  q = path(p)
  if q.exists():
    q.unlink()


def rmtree(p: PathLike) -> None:
  """Deletes directory `p` and everything in it (no error when it is already gone)."""
  q = path(p)
  if q.exists():
    q.rmtree()


def move(src: PathLike, dst: PathLike) -> None:
  """Moves file or directory `src` to `dst` (a rename on a local disk; copy + delete on an
  object store, where a directory is a prefix of objects)."""
  s, d = path(src), path(dst)
  if not is_remote(s) and not is_remote(d):
    os.replace(os.fspath(s), os.fspath(d))
  elif s.is_dir():
    for rel in files_under(s):
      target = d.joinpath(*rel.split('/'))
      target.parent.mkdir(parents=True, exist_ok=True)
      s.joinpath(*rel.split('/')).copy(target, overwrite=True)
    s.rmtree()
  else:
    s.rename(d)


def open_file(p: PathLike, mode: str = 'r', encoding: str = 'utf-8') -> IO:
  """Opens `p` ('r', 'rb', 'w', 'wb'); text modes use `encoding`."""
  q = path(p)
  if 'b' in mode:
    return q.open(mode)
  return q.open(mode, encoding=encoding)


def read_text(p: PathLike, encoding: str = 'utf-8') -> str:
  with open_file(p, 'r', encoding=encoding) as f:
    return f.read()


def read_bytes(p: PathLike) -> bytes:
  with open_file(p, 'rb') as f:
    return f.read()


def write_text(p: PathLike, text: str, encoding: str = 'utf-8') -> None:
  """Writes `text` to `p` atomically (see the module docstring)."""
  write_bytes(p, text.encode(encoding))


def write_bytes(p: PathLike, data: bytes) -> None:
  """Writes `data` to `p` atomically: a crash leaves the old file or the new one.

  Raises:
    OSError: the write failed (a local temp file is removed; the target is untouched).
  """
  with atomic_output(p, 'wb') as f:
    f.write(data)


@contextlib.contextmanager
def atomic_output(p: PathLike, mode: str = 'w', encoding: str = 'utf-8') -> Iterator[IO]:
  """A file object whose content replaces `p` only when the block ends without error.

  Local disks: a temp file beside `p`, fsynced and renamed over it; an error removes the
  temp file. Object stores: an in-memory buffer uploaded as one object at the end.
  """
  q = path(p)
  if is_remote(q):
    buffer = io.BytesIO() if 'b' in mode else io.StringIO()
    yield buffer
    data = buffer.getvalue()
    q.write_bytes(data if isinstance(data, bytes) else data.encode(encoding))
    return
  target = os.fspath(q)
  fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(target)}.', suffix='.tmp',
                             dir=os.path.dirname(target))
  try:
    with os.fdopen(fd, mode, **({} if 'b' in mode else {'encoding': encoding})) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def append_text(p: PathLike, text: str, encoding: str = 'utf-8') -> None:
  """Appends `text` to `p`. A local write that fails is cut back to the old size (no torn
  line); an object store's object is replaced whole, so it is never torn.

  Raises:
    OSError: the write failed.
  """
  q = path(p)
  if is_remote(q):
    old = q.read_bytes() if q.exists() else b''
    q.write_bytes(old + text.encode(encoding))
    return
  local = os.fspath(q)
  size = os.path.getsize(local) if os.path.exists(local) else 0
  try:
    with open(local, 'a', encoding=encoding) as f:
      f.write(text)
  except OSError:
    with contextlib.suppress(OSError):
      os.truncate(local, size)
    raise


@contextlib.contextmanager
def local_copy(p: PathLike) -> Iterator[str]:
  """A local file path holding `p`'s bytes, for libraries that read only local files;
  `p` itself when it is local."""
  if not is_remote(p):
    yield os.fspath(path(p))
    return
  with tempfile.TemporaryDirectory(prefix='lmjax-') as tmp:
    local = os.path.join(tmp, basename(p))
    path(p).copy(epath.Path(local))
    yield local


def upload_tree(local_dir: str, remote_dir: PathLike) -> None:
  """Copies every file under `local_dir` to `remote_dir` (replacing files that exist)."""
  base = path(remote_dir)
  for root, _, files in os.walk(local_dir):
    rel = os.path.relpath(root, local_dir)
    for name in files:
      target = base / name if rel == '.' else base / rel / name
      target.parent.mkdir(parents=True, exist_ok=True)
      epath.Path(os.path.join(root, name)).copy(target, overwrite=True)


def download_tree(remote_dir: PathLike, local_dir: str) -> None:
  """Copies every file under `remote_dir` into `local_dir` (created as needed)."""
  base = path(remote_dir)
  for rel in files_under(base):
    target = os.path.join(local_dir, *rel.split('/'))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    base.joinpath(*rel.split('/')).copy(epath.Path(target), overwrite=True)


def files_under(directory: PathLike) -> List[str]:
  """Relative paths ('a/b.txt') of every file under `directory`, sorted. Built from
  directory listings by name, which every backend reports alike (walk's root paths differ)."""
  base, out = path(directory), []
  for name in listdir(base):
    child = base / name
    if child.is_dir():
      out += [f'{name}/{rel}' for rel in files_under(child)]
    else:
      out.append(name)
  return out

