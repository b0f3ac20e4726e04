"""launch.sh: local runs and sweeps, Cloud TPU commands (fake gcloud), safe quoting."""

import csv
import json
import os
import stat
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, 'launch.sh')
EVIL = "--config.task.name=x'; touch pwned; echo \"$HOME\" `id` $(id) \\"


def write_script(path, body):
  path.write_text(f'#!{sys.executable}\n{body}')
  path.chmod(path.stat().st_mode | stat.S_IEXEC)
  return str(path)


def recorder(path, log):
  """An executable that appends its argv (and for `scp`, the staged files) to `log`."""
  return write_script(path, f'''import json, os, sys
args = sys.argv[1:]
rec = {{'argv': args}}
if 'scp' in args:
  src = args[args.index('--recurse') + 1]
  rec['staged'] = sorted(os.listdir(src))
with open({str(log)!r}, 'a') as f:
  f.write(json.dumps(rec) + '\\n')
''')


def records(log):
  return [json.loads(line) for line in log.read_text().splitlines()]


def launch(args, tmp_path, env=None, **kw):
  return subprocess.run(['bash', LAUNCH, *args], cwd=tmp_path, capture_output=True, text=True,
                        timeout=kw.pop('timeout', 60), env=dict(os.environ, **(env or {})), **kw)


def test_local_single_run_passes_overrides_intact(tmp_path):
  log = tmp_path / 'python.log'
  fake_python = recorder(tmp_path / 'python', log)
  config = os.path.join(REPO, 'configs', 'default.py')
  proc = launch(['local', config + ':runlocal', '--workdir', 'w', '--config.train.batch_size=32',
                 '--', EVIL], tmp_path, env={'PYTHON': fake_python})
  assert proc.returncode == 0, proc.stderr
  (rec,) = records(log)
  assert rec['argv'] == [os.path.join(REPO, 'experiments', 'train.py'),
                         f'--config={config}:runlocal', '--workdir=w',
                         '--config.train.batch_size=32', EVIL]
  assert not (tmp_path / 'pwned').exists()
  proc = launch(['local', config, '--bogus'], tmp_path, env={'PYTHON': fake_python})
  assert proc.returncode == 2 and 'unexpected argument' in proc.stderr


def test_local_sweep_writes_results_table(tmp_path):
  config = os.path.join(REPO, 'configs', 'default.py') + ':runlocal'
  tiny = ['--config.train.num_train_steps=2', '--config.train.log_every=1',
          '--config.train.eval_every=2', '--config.train.checkpoint_every=2',
          '--config.optimizer.warmup_steps=1', '--config.train.async_checkpointing=False',
          '--config.task.num_train=200', '--config.task.num_eval=16', '--config.eval.batch_size=16',
          '--config.eval.num_samples=0']
  proc = launch(['local', config, '--workdir', 'sweep', '--sweep', 'lr', '--', *tiny], tmp_path,
                env={'PYTHON': sys.executable}, timeout=240)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(tmp_path / 'sweep' / 'results.csv') as f:
    rows = list(csv.DictReader(f))
  assert [float(r['optimizer.learning_rate']) for r in rows] == [1e-3, 2e-3]
  for r in rows:
    assert r['status'] == 'ok' and float(r['wall_time_sec']) > 0
    assert float(r['loss']) > 0 and r['step'] == '2'
    assert (tmp_path / r['workdir'] / 'summary.json').exists()
  md = (tmp_path / 'sweep' / 'results.md').read_text().splitlines()
  assert md[0].startswith('| trial | optimizer.learning_rate |') and len(md) == 4


def _tpu_args(*extra):
  return ['tpu', '--name', 'my-tpu', '--zone', 'us-central2-b', '--project', 'proj', '--create',
          *extra, 'configs/default.py:runlocal', '--workdir', 'gs://bucket/run', '--', EVIL]


def test_tpu_runs_gcloud_on_all_workers_with_safe_quoting(tmp_path):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  log = tmp_path / 'gcloud.log'
  recorder(bin_dir / 'gcloud', log)
  env = {'PATH': f'{bin_dir}:{os.environ["PATH"]}'}
  proc = launch(_tpu_args(), tmp_path, env=env)
  assert proc.returncode == 0, proc.stderr
  create, scp, install, run = records(log)
  where = ['--zone=us-central2-b', '--project=proj']
  assert create['argv'] == ['compute', 'tpus', 'tpu-vm', 'create', 'my-tpu', *where,
                            '--accelerator-type=v4-8', '--version=tpu-ubuntu2204-base']
  assert scp['argv'][:4] == ['compute', 'tpus', 'tpu-vm', 'scp']
  assert scp['argv'][-4:] == ['my-tpu:~/', *where, '--worker=all']
  assert {'launch.sh', 'lmjax', 'configs', 'experiments'} <= set(scp['staged'])
  assert '.git' not in scp['staged']
  for rec in (install, run):
    assert rec['argv'][:6] == ['compute', 'tpus', 'tpu-vm', 'ssh', 'my-tpu', *where][:6]
    assert '--worker=all' in rec['argv']
  assert "pip install -q -e '.[gcs]' 'jax[tpu]'" in install['argv'][-1]

  # The remote command, run by a shell as ssh does, gives Python the override intact.
  command = run['argv'][-1]
  assert command.startswith('--command=')
  home = tmp_path / 'home'
  (home / 'lmjax').mkdir(parents=True)
  remote_log = tmp_path / 'remote.log'
  write_script(home / 'lmjax' / 'launch.sh', f'''import json, os, sys
with open({str(remote_log)!r}, 'w') as f:
  json.dump({{'argv': sys.argv[1:], 'python': os.environ.get('PYTHON')}}, f)
''')
  subprocess.run(['bash', '-c', command[len('--command='):]], cwd=home, check=True, timeout=30)
  remote = json.loads(remote_log.read_text())
  assert remote['python'] == '.venv/bin/python'
  assert remote['argv'] == ['local', 'configs/default.py:runlocal', '--workdir', 'gs://bucket/run',
                            '--', EVIL, '--config.distributed.enabled=True']
  assert not (home / 'lmjax' / 'pwned').exists() and not (tmp_path / 'pwned').exists()


def test_tpu_dry_run_prints_commands_and_runs_nothing(tmp_path):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  log = tmp_path / 'gcloud.log'
  recorder(bin_dir / 'gcloud', log)
  proc = launch(_tpu_args('--dry-run'), tmp_path,
                env={'PATH': f'{bin_dir}:{os.environ["PATH"]}'})
  assert proc.returncode == 0, proc.stderr
  assert not log.exists()
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 4 and all(l.startswith('gcloud compute tpus tpu-vm ') for l in lines)
  assert lines[0] == ('gcloud compute tpus tpu-vm create my-tpu --zone=us-central2-b '
                      '--project=proj --accelerator-type=v4-8 --version=tpu-ubuntu2204-base')
  # Each printed line is a shell command: run through a shell, it gives gcloud these argv.
  subprocess.run(['bash', '-c', lines[3]], cwd=tmp_path, check=True, timeout=30,
                 env=dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}'))
  (rec,) = records(log)
  assert rec['argv'][:5] == ['compute', 'tpus', 'tpu-vm', 'ssh', 'my-tpu']
  assert rec['argv'][-1].endswith("-- '--config.task.name=x'\\''; touch pwned; echo \"$HOME\" "
                                  "`id` $(id) \\' --config.distributed.enabled=True")
  assert not (tmp_path / 'pwned').exists()


def test_tpu_needs_name_and_zone(tmp_path):
  proc = launch(['tpu', '--zone', 'z', 'configs/default.py'], tmp_path)
  assert proc.returncode == 2 and 'tpu needs --name' in proc.stderr
