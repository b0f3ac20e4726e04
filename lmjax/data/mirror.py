"""Local mirrors of preprocessed-data folders kept on object stores (gs://…).

ArrayRecord shards are read with local file I/O (Grain's readers, like MaxText's, expect a
local or FUSE-mounted file system). A preprocessed folder under a URL — a gs:// workdir's
WORKDIR/preprocessed, or `config.task.preprocessed_dir=gs://…` — is therefore built in a
local folder and uploaded, or downloaded once into it; training reads the local copy.
The remote folder counts as complete only when its index.json is there, and index.json is
uploaded last.
"""

import hashlib
import os
import shutil

from lmjax import fileio
from lmjax.data import records


def local_folder(directory: str, cache_dir: str) -> str:
  """The local mirror of remote folder `directory`: CACHE_DIR/preprocessed/<hash of the URL>.

  Args:
    directory: the remote preprocessed folder (root/<key>).
    cache_dir: `config.task.local_cache_dir` (~ is expanded).
  """
  digest = hashlib.sha256(directory.encode()).hexdigest()[:16]
  return os.path.join(os.path.abspath(os.path.expanduser(cache_dir)), 'preprocessed',
                      f'{fileio.basename(directory)}-{digest}')


def is_complete(directory: str) -> bool:
  """Whether `directory` (local or remote) holds a finished folder (its index is written)."""
  return fileio.exists(fileio.join(directory, records.INDEX))


def fetch(directory: str, local: str) -> bool:
  """Downloads remote `directory` into `local` when it is complete there.

  Returns:
    True when `local` now holds the folder; False when the remote one is not complete.
  """
  if not is_complete(directory):
    return False
  tmp = f'{local}.tmp-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  fileio.download_tree(directory, tmp)
  try:
    os.replace(tmp, local)
  except OSError:  # another process on this host fetched it first
    shutil.rmtree(tmp, ignore_errors=True)
  return True


def publish(local: str, directory: str) -> None:
  """Uploads finished local folder `local` to remote `directory`, its index last."""
  index = os.path.join(local, records.INDEX)
  staging = f'{local}.upload-{os.getpid()}'
  shutil.rmtree(staging, ignore_errors=True)
  shutil.copytree(local, staging, ignore=shutil.ignore_patterns(records.INDEX))
  try:
    fileio.upload_tree(staging, directory)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  fileio.write_bytes(fileio.join(directory, records.INDEX), open(index, 'rb').read())
