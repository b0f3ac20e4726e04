"""Bad input through the real command lines: train.py, evaluate.py, decode.py, distill.py,
launch.sh.

Each case runs the script in a subprocess and checks: exit status != 0, no `Traceback`
on stderr, a message naming the file, field or flag, and that what was already written
(the run's workdir, an earlier --output) is byte-identical afterwards.
"""

import hashlib
import os
import shutil
import sys

import pytest

from configs import default
from lmjax.train import loop
from lmjax.train import soak
from tests import scripts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = 'configs/default.py:runlocal'
EARLIER = 'an earlier complete output\n'


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A trained workdir (4 steps, checkpoints 2 and 4) and scratch files beside it."""
  root = tmp_path_factory.mktemp('cli')
  config = default.get_config('runlocal')
  config.train.num_train_steps, config.train.checkpoint_every = 4, 2
  config.train.eval_every, config.optimizer.warmup_steps = 4, 1
  config.train.async_checkpointing, config.eval.num_samples = False, 0
  loop.train_and_evaluate(config, str(root / 'w'))
  (root / 'in.txt').write_text('twenty third of march nineteen ninety four\n')
  (root / 'latin1.txt').write_bytes(b'twenty third of march\nbad \xff byte\n')
  (root / 'bad_config.py').write_text('def get_config(:\n')
  (root / 'not_a_run').mkdir()
  (root / 'bad_json').mkdir()
  (root / 'bad_json' / 'config.json').write_text('{"task": ')
  (root / 'no_ckpt').mkdir()
  shutil.copy(root / 'w' / 'config.json', root / 'no_ckpt' / 'config.json')
  return root


def cli(argv, stdin_bytes=b''):
  """Runs argv (an experiments/ script or launch.sh) from the repository root."""
  env = soak.subprocess_env()
  env['PYTHON'] = sys.executable  # launch.sh's interpreter
  if argv[0].endswith('.py'):
    argv = [sys.executable, os.path.join('experiments', argv[0]), *argv[1:]]
  else:
    argv = ['bash', *argv]
  proc = scripts.run(argv, cwd=REPO, env=env, input=stdin_bytes, timeout=300)
  return proc.returncode, proc.stderr.decode('utf-8', 'replace')


def tree_digest(path):
  """Digest of every file name and its bytes under `path` (or of one file)."""
  digest = hashlib.sha256()
  paths = [path] if os.path.isfile(path) else sorted(
      os.path.join(d, f) for d, _, files in os.walk(path) for f in files)
  for p in paths:
    digest.update(os.path.relpath(p, path).encode())
    with open(p, 'rb') as fh:
      digest.update(fh.read())
  return digest.hexdigest()


def check(root, argv, needles, stdin_bytes=b''):
  """Runs a bad command; asserts one clear error and that nothing written changed."""
  out = root / 'out.txt'
  out.write_text(EARLIER)
  argv = [a.format(root=root, w=root / 'w', out=out) for a in argv]
  before = tree_digest(str(root / 'w'))
  code, err = cli(argv, stdin_bytes)
  assert code != 0, err
  assert 'Traceback' not in err, err[-3000:]
  for needle in needles:
    assert needle.format(root=root, w=root / 'w') in err, err[-3000:]
  assert tree_digest(str(root / 'w')) == before  # the run's workdir is untouched
  assert out.read_text() == EARLIER  # so is an earlier output
  assert not [f for f in os.listdir(root) if '.tmp-' in f]  # no temporary file left behind


TRAIN = ['train.py', f'--config={CONFIG}', '--workdir={root}/fresh']
TRAIN_CASES = {
    'config file missing': (['train.py', '--config=configs/nope.py', '--workdir={root}/fresh'],
                            ["--config=configs/nope.py: no such config file"]),
    'config file does not load': (['train.py', '--config={root}/bad_config.py', '--workdir={root}/fresh'],
                                  ['bad_config.py: the config file does not load: SyntaxError']),
    'unknown field': (TRAIN + ['--config.train.nope=1'],
                      ['unknown config field --config.train.nope', 'batch_size']),
    'field of the wrong type': (TRAIN + ['--config.train.batch_size=abc'],
                                ['--config.train.batch_size=abc']),
    'invalid value': (TRAIN + ['--config.optimizer.learning_rate=-1'],
                      ['config.optimizer.learning_rate=-1.0: expected a positive']),
    'unknown task': (TRAIN + ['--config.task.name=nope'], ["config.task.name='nope'", 'synthetic_dates']),
    'batch the devices do not divide': (TRAIN + ['--config.train.batch_size=12'],
                                        ['config.train.batch_size=12', 'not divisible']),
    'data folder missing': (['train.py', '--config=configs/multi30k_transformer.py:{root}/nodata',
                             '--workdir={root}/fresh'], ["config.task.data_dir='{root}/nodata': no such directory"]),
    'workdir under a file': (['train.py', f'--config={CONFIG}', '--workdir={out}/w'],
                             ['--workdir', 'is not writable']),
    'no --workdir': (['train.py', f'--config={CONFIG}'], ['--workdir']),
    'stray argument': (TRAIN + ['extra'], ["unexpected arguments: ['extra']"]),
    'KD weight above 1': (TRAIN + ['--config.train.kd_weight=2'],
                          ['config.train.kd_weight=2.0: expected a value in [0, 1]']),
    'pruning steps off the schedule': (TRAIN + ['--config.train.pruning.sparsity=0.5',
                                                '--config.train.pruning.update_every=3'],
                                       ['config.train.pruning.end_step=0', 'update_every=3']),
    'another model in the workdir': (['train.py', f'--config={CONFIG}', '--workdir={w}',
                                      '--config.model.emb_dim=48'],
                                     ['checkpoints/last/4', 'could not be restored']),
}
EVALUATE = ['evaluate.py', '--workdir={w}', '--output={out}']
EVALUATE_CASES = {
    'workdir missing': (['evaluate.py', '--workdir={root}/none', '--output={out}'],
                        ['--workdir {root}/none does not exist']),
    'not a training workdir': (['evaluate.py', '--workdir={root}/not_a_run', '--output={out}'],
                               ['{root}/not_a_run/config.json not found']),
    'config.json not JSON': (['evaluate.py', '--workdir={root}/bad_json', '--output={out}'],
                             ['{root}/bad_json/config.json is not valid JSON']),
    'no checkpoint': (['evaluate.py', '--workdir={root}/no_ckpt', '--output={out}'],
                      ['no checkpoint in {root}/no_ckpt/checkpoints/last']),
    'no such step': (EVALUATE + ['--checkpoint=999'], ['--checkpoint=999: no such step', '[2, 4]']),
    'bad checkpoint name': (EVALUATE + ['--checkpoint=newest'], ["--checkpoint='newest': expected"]),
    'bad split': (EVALUATE + ['--split=train'], ["--split='train': expected one of"]),
    'no test split': (EVALUATE + ['--split=test'], ["--split=test: the run's task"]),
    'beam 0': (EVALUATE + ['--beam_size=0'], ['--beam_size=0: must be >= 1']),
    'ensemble of translators': (EVALUATE + ['--ensemble={w}'], ['--ensemble: only classify and tag']),
    'average more than kept': (EVALUATE + ['--average_last=9'], ['average the last 9 checkpoints']),
    'output is a folder': (['evaluate.py', '--workdir={w}', '--output={root}'],
                           ['--output={root} is a folder']),
    'unknown quantization': (EVALUATE + ['--quantize=int4'], ["--quantize='int4': expected"]),
}
DECODE = ['decode.py', '--workdir={w}', '--input={root}/in.txt', '--output={out}']
DECODE_CASES = {
    'input missing': (['decode.py', '--workdir={w}', '--input={root}/none.txt', '--output={out}'],
                      ['--input={root}/none.txt: no such file']),
    'input is a folder': (['decode.py', '--workdir={w}', '--input={root}', '--output={out}'],
                          ['--input={root}: no such file']),
    'input not UTF-8': (['decode.py', '--workdir={w}', '--input={root}/latin1.txt', '--output={out}'],
                        ['{root}/latin1.txt:2: not valid UTF-8', '--encoding_errors=replace']),
    'stdin not UTF-8': (['decode.py', '--workdir={w}', '--output={out}'],
                        ['<stdin>:2: not valid UTF-8']),
    'output is a folder': (['decode.py', '--workdir={w}', '--input={root}/in.txt', '--output={root}'],
                           ['--output={root} is a folder']),
    'workdir missing': (['decode.py', '--workdir={root}/none', '--input={root}/in.txt', '--output={out}'],
                        ['--workdir {root}/none does not exist']),
    'top_p above 1': (DECODE + ['--top_p=2'], ['--top_p=2.0']),
    'beam and sampling': (DECODE + ['--beam_size=2', '--temperature=1'], ['choose one']),
    'batch 0': (DECODE + ['--batch_size=0'], ['--batch_size=0']),
    'unknown flag': (DECODE + ['--beam=4'], ['beam']),
}
DISTILL_CASES = {
    'student without parallel files': (['distill.py', '--teacher_workdir={w}', f'--config={CONFIG}',
                                        '--workdir={root}/fresh'],
                                       ["config.task.name='synthetic_dates'"]),
}
LAUNCH = ['launch.sh', 'local', CONFIG, '--workdir', '{root}/fresh']
LAUNCH_CASES = {
    'no arguments': (['launch.sh'], ['local CONFIG']),
    'unknown mode': (['launch.sh', 'remote', CONFIG], ["unknown mode 'remote'"]),
    'config file missing': (['launch.sh', 'local', 'configs/nope.py'], ["config file 'configs/nope.py' not found"]),
    'stray flag': (LAUNCH + ['--bogus'], ["unexpected argument '--bogus'"]),
    'two configs': (LAUNCH + ['configs/dates_lstm.py'], ["unexpected argument 'configs/dates_lstm.py'"]),
    '--workdir without value': (['launch.sh', 'local', CONFIG, '--workdir'], ['--workdir needs a value']),
    'tpu without --name': (['launch.sh', 'tpu', '--zone', 'z', CONFIG], ['tpu needs --name']),
    'tpu without --zone': (['launch.sh', 'tpu', '--name', 'n', CONFIG], ['tpu needs --zone']),
    'unknown sweep': (LAUNCH + ['--sweep', 'nope'], ["unknown sweep 'nope'", "['lr', 'size']"]),
    'unknown field': (LAUNCH + ['--config.train.nope=1'], ['unknown config field --config.train.nope']),
}
CASES = [(f'{script} {name}', argv, needles)
         for script, cases in (('train', TRAIN_CASES), ('evaluate', EVALUATE_CASES),
                               ('decode', DECODE_CASES), ('distill', DISTILL_CASES),
                               ('launch', LAUNCH_CASES))
         for name, (argv, needles) in cases.items()]


@pytest.mark.parametrize('argv,needles', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error_and_nothing_written_changes(run, argv, needles):
  stdin = b'twenty third of march\nbad \xff byte\n' if 'decode.py' in argv and not any(
      a.startswith('--input') for a in argv) else b''
  check(run, argv, needles, stdin)


def test_damaged_checkpoint_is_one_line_in_evaluate_and_decode(run, tmp_path):
  workdir = tmp_path / 'w'
  shutil.copytree(run / 'w', workdir)
  soak.damage_checkpoint(str(workdir / 'checkpoints' / 'last' / '4'), 'truncate')
  before = tree_digest(str(workdir))
  for argv in (['evaluate.py', f'--workdir={workdir}', '--checkpoint=4'],
               ['decode.py', f'--workdir={workdir}', f'--input={run}/in.txt', '--checkpoint=4']):
    code, err = cli(argv)
    assert code != 0 and 'Traceback' not in err, err[-3000:]
    assert 'checkpoints/last/4' in err, err[-3000:]
  assert tree_digest(str(workdir)) == before


def test_damaged_checkpoint_with_fallback_off_stops_train_in_one_line(run, tmp_path):
  """train.checkpoint_fallback=false: one line, nothing moved (with fallback on, the damaged
  checkpoint is set aside and the run resumes: tests/train_test.py, tests/reliability_test.py)."""
  workdir = tmp_path / 'w'
  shutil.copytree(run / 'w', workdir)
  soak.damage_checkpoint(str(workdir / 'checkpoints' / 'last' / '4'), 'manifest')
  before = tree_digest(str(workdir))
  code, err = cli(['train.py', f'--config={CONFIG}', f'--workdir={workdir}',
                   '--config.train.checkpoint_fallback=false', '--config.train.num_train_steps=6'])
  assert code != 0 and 'Traceback' not in err, err[-3000:]
  assert 'checkpoints/last/4 is damaged' in err and 'Nothing was deleted' in err
  assert tree_digest(str(workdir)) == before


def test_encoding_errors_replace_decodes_what_strict_refuses(run, tmp_path):
  out = tmp_path / 'o.txt'
  code, err = cli(['decode.py', f'--workdir={run}/w', f'--input={run}/latin1.txt', f'--output={out}',
                   '--encoding_errors=replace'])
  assert code == 0, err[-3000:]
  assert len(out.read_text().splitlines()) == 2
