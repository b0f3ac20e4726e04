"""A non-editable install holds lmjax only (no top-level `configs` package to collide with
other projects'), and config files that import other config files still load from the
repository root."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_installed_package_has_no_configs_and_a_config_importing_configs_trains(tmp_path):
  site = tmp_path / 'site'
  # What `pip install .` puts in site-packages: setup.py's packages, built (no network,
  # no wheel package needed).
  subprocess.run([sys.executable, 'setup.py', '-q', 'build_py', '--build-lib', str(site)],
                 cwd=REPO, check=True, capture_output=True, timeout=300)
  assert (site / 'lmjax' / 'config' / 'defaults.py').is_file()
  assert not (site / 'configs').exists()
  # Only the installed copy on the path: `configs` must come from the config file's folder.
  env = dict(os.environ, PYTHONPATH=str(site))
  cmd = [sys.executable, 'experiments/train.py', '--config=configs/dates_classify_lstm.py:runlocal',
         f'--workdir={tmp_path / "w"}', '--config.train.num_train_steps=2',
         '--config.train.eval_every=2', '--config.optimizer.warmup_steps=1',
         '--config.eval.num_samples=0']
  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'Finished at step 2' in out.stdout
