"""tests/scripts.run gives what subprocess.run gives for the same command."""

import subprocess
import sys

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
