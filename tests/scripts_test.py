"""tests/scripts.run and .start give what subprocess.run and Popen give for the same command."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests import scripts

SCRIPT = '''
import os, sys
from absl import app, flags
flags.DEFINE_integer('code', 0, 'exit code')
flags.DEFINE_bool('boom', False, 'raise')
def main(argv):
  del argv
  data = sys.stdin.read()
  print('out:', data.upper(), os.getcwd(), os.environ.get('LMJAX_TEST_VALUE'))
  print('err: é', file=sys.stderr)
  if flags.FLAGS.boom:
    raise RuntimeError('boom')
  sys.exit(flags.FLAGS.code)
if __name__ == '__main__':
  app.run(main)
'''


@pytest.mark.parametrize('args', [[], ['--code=3'], ['--boom'], ['--nope']])
def test_forked_script_matches_a_subprocess(tmp_path, args):
  script = tmp_path / 'script.py'
  script.write_text(SCRIPT)
  argv = [sys.executable, str(script), *args]
  env = dict(scripts.os.environ, LMJAX_TEST_VALUE='x')
  forked = scripts.run(argv, cwd=str(tmp_path), env=env, input='abc é', text=True)
  real = subprocess.run(argv, cwd=str(tmp_path), env=env, input='abc é', text=True,
                        capture_output=True)
  assert forked.returncode == real.returncode
  assert forked.stdout == real.stdout
  strip = lambda err: [l for l in err.splitlines() if not l.startswith('  File ')]
  assert strip(forked.stderr)[-3:] == strip(real.stderr)[-3:]


def test_timeout_kills_the_script(tmp_path):
  script = tmp_path / 'sleep.py'
  script.write_text('import time\ntime.sleep(60)\n')
  with pytest.raises(subprocess.TimeoutExpired):
    scripts.run([sys.executable, str(script)], timeout=1)


def test_started_script_logs_exits_and_is_killed_with_its_group(tmp_path):
  """`start` gives what Popen(stdout=log, stderr=STDOUT, start_new_session=True) gives."""
  script = tmp_path / 'script.py'
  script.write_text(SCRIPT)
  env = dict(scripts.os.environ, LMJAX_TEST_VALUE='y')
  started = scripts.start([sys.executable, str(script), '--code=3'], str(tmp_path / 'a.log'),
                          cwd=str(tmp_path), env=env)
  assert started.wait(60) == 3 and started.returncode == 3
  log = (tmp_path / 'a.log').read_text()
  assert f'out:  {tmp_path} y' in log and 'err: é' in log  # stdout and stderr, one file

  # A script that started a child of its own: kill takes the whole process group.
  sleeper = tmp_path / 'sleeper.py'
  sleeper.write_text('import subprocess, sys, time\n'
                     'child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])\n'
                     'print(child.pid, flush=True)\ntime.sleep(60)\n')
  started = scripts.start([sys.executable, str(sleeper)], str(tmp_path / 'b.log'))
  deadline = time.time() + 60
  while not (tmp_path / 'b.log').read_text().strip() and time.time() < deadline:
    time.sleep(0.05)
  child = int((tmp_path / 'b.log').read_text())
  assert started.poll() is None
  started.kill()
  assert started.returncode == -signal.SIGKILL
  while time.time() < deadline:
    try:
      os.kill(child, 0)
    except ProcessLookupError:
      break
    time.sleep(0.05)
  else:
    raise AssertionError('the child outlived the kill')
