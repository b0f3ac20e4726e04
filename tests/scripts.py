"""Runs an experiments/ script as the tests' command line would, without paying for imports.

A fresh interpreter spends ~2 s importing jax, flax, optax, orbax and lmjax before a
script reads its first flag; the suite runs ~60 such commands. `run` forks a server
process that imported them once (multiprocessing's forkserver; no JAX backend is
initialized before the fork, so XLA_FLAGS and the devices are the child's own) and runs
the script there with `runpy` under the given argv, environment, working directory and
stdin, its stdout/stderr captured, its exit code returned — what `subprocess.run` gives.
`start` does the same without waiting (what `subprocess.Popen` gives: the pod tests'
worker processes). Commands it cannot run that way (another interpreter, a changed JAX_* variable that jax
reads at import, PYTHONPATH/working-directory imports beside the repository) go to a
real subprocess.
"""

import atexit
import io
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import traceback
from typing import Dict, Optional, Sequence, Union

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRELOAD = ['numpy', 'jax', 'jax.numpy', 'flax.linen', 'optax', 'orbax.checkpoint', 'absl.app',
           'absl.flags', 'ml_collections.config_flags', 'lmjax.train.loop',
           'lmjax.tools.workdir_tools', 'lmjax.tools.inference', 'matplotlib.pyplot']
_context = None
_server_env: Dict[str, str] = {}  # the environment the server imported the modules in


def _forkserver():
  global _context, _server_env
  if _context is None:
    _context = multiprocessing.get_context('forkserver')
    _context.set_forkserver_preload(PRELOAD)
    _server_env = dict(os.environ)
  return _context


def _same_imports(env: Dict[str, str]) -> bool:
  """Whether the preloaded modules are what a fresh interpreter with `env` would import."""
  server_env = _server_env if _context is not None else os.environ
  # Read when the interpreter starts or jax is imported (PYTHON alone is launch.sh's).
  keys = {k for k in set(env) | set(server_env) if k.startswith(('JAX_', 'PYTHON'))}
  keys -= {'PYTHONPATH', 'PYTHON'}
  if any(env.get(k) != server_env.get(k) for k in keys):
    return False
  extra = [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
  return all(os.path.abspath(p) == REPO for p in extra)


def _forkable(argv, env) -> bool:
  """Whether `argv` is `python script.py ...` that the preloaded server can run."""
  return (len(argv) >= 2 and argv[0] == sys.executable and argv[1].endswith('.py')
          and not argv[1].startswith('-') and _same_imports(env))


def _child(script, args, cwd, env, stdin_path, out_path, err_path, new_session=False):
  """In the forked child: the script as `python script args` would run it.

  err_path None: stderr goes to stdout's file. new_session: the child leads its own
  session and process group (what `Popen(start_new_session=True)` gives).
  """
  if new_session:
    os.setsid()
  for fd, path, flags in ((0, stdin_path, os.O_RDONLY),
                          (1, out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                          (2, err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
    if path is None:
      os.dup2(1, fd)
      continue
    opened = os.open(path, flags, 0o644)
    os.dup2(opened, fd)
    os.close(opened)
  sys.stdin = io.TextIOWrapper(io.FileIO(0, 'r', closefd=False), encoding='utf-8')
  sys.stdout = io.TextIOWrapper(io.FileIO(1, 'w', closefd=False), encoding='utf-8',
                                line_buffering=False, write_through=True)
  sys.stderr = io.TextIOWrapper(io.FileIO(2, 'w', closefd=False), encoding='utf-8',
                                errors='backslashreplace', write_through=True)
  os.environ.clear()
  os.environ.update(env)
  os.chdir(cwd)
  sys.argv = [script, *args]
  sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
  code = 0
  try:
    runpy.run_path(script, run_name='__main__')
  except SystemExit as e:
    if e.code is None:
      code = 0
    elif isinstance(e.code, int):
      code = e.code
    else:
      print(e.code, file=sys.stderr)
      code = 1
  except BaseException:  # what the interpreter prints for an uncaught exception
    traceback.print_exc()
    code = 1
  try:
    atexit._run_exitfuncs()  # a forked child skips them; an interpreter runs them at exit
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
  sys.exit(code)


def run(argv: Sequence[str], *, cwd: str = REPO, env: Optional[Dict[str, str]] = None,
        input: Union[str, bytes, None] = None, timeout: float = 300, text: bool = False,
        ) -> subprocess.CompletedProcess:
  """`subprocess.run(argv, cwd=, env=, input=, capture_output=True, timeout=, text=)`.

  Args:
    argv: `[sys.executable, script.py, *args]` runs forked; anything else in a subprocess.
    cwd, env, input, timeout, text: as for subprocess.run (env None: this environment).

  Returns:
    CompletedProcess with returncode, stdout and stderr.

  Raises:
    subprocess.TimeoutExpired: the script ran past `timeout` (it is killed).
  """
  env = dict(os.environ if env is None else env)
  argv = list(argv)
  if not _forkable(argv, env):
    return subprocess.run(argv, cwd=cwd, env=env, input=input, capture_output=True,
                          timeout=timeout, text=text)
  script = argv[1] if os.path.isabs(argv[1]) else os.path.join(cwd, argv[1])
  with tempfile.TemporaryDirectory(prefix='lmjax-script-') as tmp:
    paths = [os.path.join(tmp, n) for n in ('stdin', 'stdout', 'stderr')]
    data = input.encode() if isinstance(input, str) else (input or b'')
    with open(paths[0], 'wb') as f:
      f.write(data)
    process = _forkserver().Process(target=_child, args=(script, argv[2:], cwd, env, *paths))
    process.start()
    process.join(timeout)
    if process.exitcode is None:
      process.kill()
      process.join()
      raise subprocess.TimeoutExpired(argv, timeout)
    out, err = (open(p, 'rb').read() for p in paths[1:])
  if text:
    out, err = out.decode('utf-8', 'replace'), err.decode('utf-8', 'replace')
  return subprocess.CompletedProcess(argv, process.exitcode, out, err)


class Started:
  """A command started by `start`: the part of subprocess.Popen the tests use (pid, poll,
  wait, returncode, send_signal, kill).

  The command leads its own process group; `kill` SIGKILLs the group (the command's own
  worker processes too), as `os.killpg(popen.pid, SIGKILL)` would.
  """

  def __init__(self, process):
    self._process = process  # a forked multiprocessing.Process or a subprocess.Popen

  @property
  def pid(self) -> int:
    return self._process.pid

  @property
  def returncode(self) -> Optional[int]:
    """Exit status, -N after signal N, None while running (as Popen.returncode)."""
    return self.poll()

  def poll(self) -> Optional[int]:
    if isinstance(self._process, subprocess.Popen):
      return self._process.poll()
    return self._process.exitcode

  def wait(self, timeout: Optional[float] = None) -> Optional[int]:
    if isinstance(self._process, subprocess.Popen):
      return self._process.wait(timeout)
    self._process.join(timeout)
    return self._process.exitcode

  def send_signal(self, sig: int) -> None:
    """Sends `sig` to the command itself (not its group), as Popen.send_signal does."""
    if self.poll() is None:
      os.kill(self.pid, sig)

  def kill(self) -> None:
    if self.poll() is None:
      try:
        os.killpg(self.pid, signal.SIGKILL)
      except ProcessLookupError:  # it ended in between
        pass
    self.wait()


def start(argv: Sequence[str], log_path: str, *, cwd: str = REPO,
          env: Optional[Dict[str, str]] = None) -> Started:
  """`subprocess.Popen(argv, cwd=, env=, stdout=log, stderr=STDOUT, start_new_session=True)`.

  Args:
    argv: `[sys.executable, script.py, *args]` runs forked (see `run`); anything else in a
      subprocess.
    log_path: file that receives the command's stdout and stderr.
    cwd, env: as for subprocess.Popen (env None: this environment).

  Returns:
    The started command.
  """
  env = dict(os.environ if env is None else env)
  argv = list(argv)
  open(log_path, 'wb').close()  # exists (empty) once `start` returns, as with Popen
  if not _forkable(argv, env):
    with open(log_path, 'wb') as log:
      return Started(subprocess.Popen(argv, cwd=cwd, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
  script = argv[1] if os.path.isabs(argv[1]) else os.path.join(cwd, argv[1])
  process = _forkserver().Process(target=_child, args=(script, argv[2:], cwd, env, os.devnull,
                                                       log_path, None, True))
  process.start()
  return Started(process)
