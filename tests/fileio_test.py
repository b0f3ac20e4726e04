"""Workdirs and data on object stores: lmjax.fileio, and a whole run on gs://.

The gs:// of these tests is tests/fake_gcs.py: epath's fsspec backend and Orbax's
TensorStore spec both routed to the local folder of the same name, so every piece of
lmjax and Orbax runs its gs:// code path offline. A run there is compared with the same
run on a local disk: the same files, bit-identical parameters after a resume, the same
evaluation and decoding outputs.
"""

import json
import os
import sys

import jax
import numpy as np
import pytest

from lmjax import fileio
from lmjax.train import checkpoint as ckpt_lib
from lmjax.train import loop
from lmjax.train import reporting
from lmjax.tools import workdir_tools
from tests import fake_gcs
from tests import fileio_scan
from tests import train_test
from tests import scripts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def gcs(monkeypatch):
  fake_gcs.install(monkeypatch)
  yield
  fake_gcs.clear_cache()


def test_no_module_touches_files_around_fileio(tmp_path):
  assert fileio_scan.offenders() == []
  # The scan finds what it looks for, and the pragma is the only way past it.
  pkg = tmp_path / 'pkg'
  pkg.mkdir()
  (pkg / 'a.py').write_text('import os\nopen("x")\nos.makedirs("y")\n'
                            'os.replace("a", "b")  # local disk: a reason\n')
  assert fileio_scan.offenders(str(pkg)) == ['lmjax/a.py:2: open', 'lmjax/a.py:3: os.makedirs']


def test_paths_keep_urls_and_make_local_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert fileio.resolve('run') == str(tmp_path / 'run')
  assert fileio.resolve('gs://bucket/run') == 'gs://bucket/run'
  assert fileio.join('gs://bucket/run', 'checkpoints', 'last') == 'gs://bucket/run/checkpoints/last'
  assert fileio.is_remote('s3://b/x') and not fileio.is_remote('/tmp/x')
  with pytest.raises(fileio.PathError, match=r'--workdir=ftp://h/x: unsupported URL scheme ftp://'):
    fileio.check_url('ftp://h/x', '--workdir')


@pytest.mark.parametrize('remote', [False, True])
def test_file_operations_local_and_on_gs(tmp_path, gcs, remote):
  base = fake_gcs.url(str(tmp_path)) if remote else str(tmp_path)
  d = fileio.join(base, 'a', 'b')
  fileio.makedirs(d)
  f = fileio.join(d, 'x.txt')
  fileio.write_text(f, 'one\n')
  fileio.append_text(f, 'two\n')
  assert fileio.read_text(f) == 'one\ntwo\n' and fileio.getsize(f) == 8
  assert fileio.listdir(d) == ['x.txt'] and fileio.isfile(f) and fileio.isdir(d)
  with pytest.raises(RuntimeError):
    with fileio.atomic_output(f) as out:
      out.write('half')
      raise RuntimeError('stop')
  assert fileio.read_text(f) == 'one\ntwo\n'  # a failed write leaves the old file
  assert fileio.listdir(d) == ['x.txt']  # and no temp file
  fileio.move(fileio.join(base, 'a'), fileio.join(base, 'moved'))
  assert not fileio.exists(d) and fileio.read_text(fileio.join(base, 'moved', 'b', 'x.txt'))
  with fileio.local_copy(fileio.join(base, 'moved', 'b', 'x.txt')) as local:
    assert open(local).read() == 'one\ntwo\n'
  fileio.download_tree(fileio.join(base, 'moved'), str(tmp_path / 'down'))
  fileio.upload_tree(str(tmp_path / 'down'), fileio.join(base, 'up'))
  assert fileio.read_text(fileio.join(base, 'up', 'b', 'x.txt')) == 'one\ntwo\n'
  fileio.rmtree(fileio.join(base, 'up'))
  assert not fileio.exists(fileio.join(base, 'up'))
  assert sorted(os.listdir(tmp_path)) == ['down', 'moved']


def _config():
  config = train_test.tiny_config(steps=8)
  config.train.async_checkpointing = True  # background saves write to the bucket too
  return config


def _files(root):
  """Relative paths of every file under a local folder; event-file names (host, time) and
  TensorStore's data-file names (random) are reduced to their kind."""
  out = set()
  for dirpath, _, names in os.walk(root):
    for n in names:
      rel = os.path.relpath(os.path.join(dirpath, n), root)
      if 'tfevents' in n:
        rel = os.path.join(os.path.dirname(rel), 'events')
      if os.path.basename(os.path.dirname(rel)) == 'd':  # TensorStore's content-hash names
        rel = os.path.join(os.path.dirname(rel), '*')
      out.add(rel)
  return out


def _metrics(path):
  return [{k: v for k, v in r.items() if k not in ('time', 'tokens_per_sec')}
          for r in reporting.read_jsonl(path)]


def test_train_resume_evaluate_decode_on_gs_match_a_local_disk(tmp_path, gcs, monkeypatch):
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  local = str(tmp_path / 'local')
  bucket_dir = str(tmp_path / 'bucket' / 'run')
  url = fake_gcs.url(bucket_dir)
  loop.train_and_evaluate(_config(), local)
  loop.train_and_evaluate(_config(), url, stop_after_steps=4)
  assert ckpt_lib.load_params(url)[1] == 4
  loop.train_and_evaluate(_config(), url)  # the same command again resumes at step 4

  a, b = ckpt_lib.load_params(local), ckpt_lib.load_params(url)
  assert a[1] == b[1] == 8
  for x, y in zip(jax.tree.leaves(a[0]), jax.tree.leaves(b[0])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert _metrics(os.path.join(local, 'metrics.jsonl')) == _metrics(
      os.path.join(bucket_dir, 'metrics.jsonl'))
  assert _files(local) == _files(bucket_dir)
  assert json.loads(open(os.path.join(bucket_dir, 'config.json')).read())

  reports = [workdir_tools.evaluate_workdir(w) for w in (local, url)]
  assert reports[0]['metrics'] == reports[1]['metrics']
  assert reports[1]['output'] == url + '/eval_last-8_eval.json'
  assert os.path.exists(os.path.join(bucket_dir, 'eval_last-8_eval.json'))

  source = fileio.join(url, 'input.txt')
  fileio.write_text(source, 'twenty third of march nineteen ninety four\n1 may 2001\n')
  outputs = []
  for w in (local, url):
    out = fileio.join(w, 'decoded.txt')
    workdir_tools.decode_file(w, source, out)
    outputs.append(fileio.read_text(out))
  assert outputs[0] == outputs[1] and len(outputs[0].splitlines()) == 2
  assert os.listdir(cwd) == []  # nothing landed in a local 'gs:' folder


def test_preprocessed_data_on_gs_is_built_once_and_fetched(tmp_path, gcs):
  from lmjax.data import text_tasks  # pylint: disable=g-import-not-at-top
  from configs import multi30k_transformer  # pylint: disable=g-import-not-at-top
  data = tmp_path / 'bucket' / 'data'
  (data / 'm').mkdir(parents=True)
  rng = np.random.default_rng(0)
  words = [f'w{i}' for i in range(30)]
  for split, n in (('train', 200), ('val', 20), ('test', 20)):
    src = [' '.join(rng.choice(words, 6)) for _ in range(n)]
    (data / 'm' / f'{split}.en').write_text('\n'.join(src) + '\n')
    (data / 'm' / f'{split}.de').write_text('\n'.join(s.upper() for s in src) + '\n')
  config = multi30k_transformer.get_config(fake_gcs.url(str(data)) + ',runlocal')
  task = config.task
  task.source.update(train_files=['m/train.en', 'm/train.de'], eval_files=['m/val.en', 'm/val.de'],
                     test_files=['m/test.en', 'm/test.de'], max_train_examples=0)
  task.tokenizer.update(type='word', vocab_size=0, min_count=1)
  task.local_cache_dir = str(tmp_path / 'cache1')
  root = fake_gcs.url(str(tmp_path / 'bucket' / 'pre'))
  first = text_tasks.preprocess_task(task, root)
  assert first.index['num_examples'] == 200
  remote = os.listdir(tmp_path / 'bucket' / 'pre')
  assert len(remote) == 1 and 'index.json' in os.listdir(tmp_path / 'bucket' / 'pre' / remote[0])
  task.local_cache_dir = str(tmp_path / 'cache2')  # another host: fetches, does not rebuild
  second = text_tasks.preprocess_task(task, root)
  assert second.directory.startswith(str(tmp_path / 'cache2'))
  assert [second[i] for i in range(5)] == [first[i] for i in range(5)]


def test_gs_workdir_without_network_is_one_clear_line(tmp_path):
  proc = scripts.run(
      [sys.executable, os.path.join(REPO, 'experiments', 'train.py'),
       '--config=' + os.path.join(REPO, 'configs', 'default.py') + ':runlocal',
       '--workdir=gs://lmjax-test-no-such-bucket/run'],
      cwd=str(tmp_path), text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=REPO, GCE_METADATA_HOST='127.0.0.1:9',
               GCE_METADATA_IP='127.0.0.1:9', NO_GCE_CHECK='True'))
  assert proc.returncode != 0
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert any('--workdir' in line and 'gs://lmjax-test-no-such-bucket/run' in line
             for line in lines), proc.stderr
  assert len(lines) <= 2, proc.stderr  # the message and the --debug hint
  assert os.listdir(tmp_path) == []
