"""A gs:// that works offline: `gs://tmp/x` is the local folder `/tmp/x`.

Installed for a test by `install(monkeypatch)`:
  * fsspec's 'gs'/'gcs' protocol (which etils.epath, and so lmjax.fileio, uses for gs://)
    is a local file system rooted at '/', so bucket 'tmp' is the folder /tmp;
  * Orbax's TensorStore kvstore spec for gs:// paths points the 'file' driver at the same
    folder (TensorStore's native GCS driver would go to the network), and Orbax's
    hierarchical-namespace probe (a google-cloud-storage API call) answers False.
Everything else — Orbax's GCS code paths, epath's URL handling, lmjax's — runs as it would
on a bucket. lmjax code that bypassed epath would try to open a local 'gs:/…' path and
fail, or write under the working directory, which the tests check stays empty.
"""

import os
import sys

import fsspec
import fsspec.registry  # pylint: disable=unused-import  (the module, for its _registry)
from fsspec.implementations.local import LocalFileSystem


class FakeGCSFileSystem(LocalFileSystem):
  """gs://BUCKET/PATH ↦ /BUCKET/PATH on the local disk."""

  protocol = ('gs', 'gcs')

  def __init__(self, *args, **kwargs):
    kwargs.pop('finalize_on_close', None)  # a gcsfs option epath passes
    super().__init__(*args, **kwargs)

  @classmethod
  def _strip_protocol(cls, path):
    path = fsspec.utils.stringify_path(path)
    for prefix in ('gs://', 'gcs://'):
      if path.startswith(prefix):
        path = '/' + path[len(prefix):]
    return LocalFileSystem._strip_protocol(path)


def url(local_dir: str) -> str:
  """The gs:// URL of local absolute folder `local_dir` under the fake."""
  assert os.path.isabs(local_dir), local_dir
  return 'gs:/' + local_dir


def _kvstore(path: str):
  from orbax.checkpoint._src.path import gcs_utils  # pylint: disable=g-import-not-at-top
  bucket, rest = gcs_utils.parse_gcs_path(path, add_trailing_slash=False)
  return {'driver': 'file', 'path': os.path.join('/', bucket, rest)}


def install(monkeypatch) -> None:
  """Routes gs:// to the local disk for the rest of the test (undone by monkeypatch)."""
  from orbax.checkpoint._src.path import gcs_utils  # pylint: disable=g-import-not-at-top
  registry = sys.modules['fsspec.registry']._registry  # pylint: disable=protected-access
  for name in ('gs', 'gcs'):
    monkeypatch.setitem(registry, name, FakeGCSFileSystem)
  clear_cache()
  monkeypatch.setattr(gcs_utils, 'get_kvstore_for_gcs', _kvstore)
  monkeypatch.setattr(gcs_utils, 'is_hierarchical_namespace_enabled', lambda path: False)
  # The fake needs neither gcsfs nor a network: skip fileio.check_url's probes for them.
  from lmjax import fileio  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(fileio, 'LIBRARIES', {})
  monkeypatch.setattr(fileio, 'ENDPOINTS', {})


def clear_cache() -> None:
  """Forgets the file-system objects epath cached (call after the test, too)."""
  from etils.epath import backend  # pylint: disable=g-import-not-at-top
  backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
