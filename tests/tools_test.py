"""Decoding and evaluation tools: evaluate.py, decode.py, checkpoint averaging, attention plots.

One tiny Transformer run is trained per module (20 steps, checkpoints at 10, 15, 20);
an attentional LSTM and a stateful LSTM language model are written at initialization
(step 0). The scripts run as subprocesses on one CPU device (the runs were written on
8), the libraries in-process.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import jax
from matplotlib import image as mpl_image
import numpy as np
import pytest

from configs import default
from configs import dates_lm_lstm
from configs import dates_lstm
from lmjax.tools import attention_plot
from lmjax.tools import averaging
from lmjax.tools import inference
from lmjax.tools import workdir_tools
from lmjax.train import reporting
from lmjax.train import loop
from tests import scripts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTENCE = 'twenty third of march nineteen ninety four'
LONG = ' '.join(['0 7 / 1 5 / 1 9 3 2'] * 3)  # 30 tokens > max_input_length 16


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  config = default.get_config('runlocal')
  config.train.checkpoint_every = 5
  config.train.async_checkpointing = False
  config.eval.num_samples = 0
  path = str(tmp_path_factory.mktemp('tools') / 'transformer')
  loop.train_and_evaluate(config, path)
  return path


def init_workdir(config, path, evaluate=False):
  """A workdir with a step-0 checkpoint of the initial parameters (no training).

  Returns the trainer's eval metrics of those parameters when `evaluate`.
  """
  config.train.async_checkpointing = False
  trainer = loop.Trainer(config, path)
  loop.save_config(config, path, 0)
  trainer.checkpoint()
  trainer.checkpointer.wait()
  trainer.checkpointer.close()
  return trainer.evaluator.evaluate(trainer.state.params) if evaluate else None


@pytest.fixture(scope='module')
def lstm_workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('tools') / 'lstm')
  init_workdir(dates_lstm.get_config('runlocal'), path)
  return path


@pytest.fixture(scope='module')
def lm_workdir(tmp_path_factory):
  """A stateful LSTM language model (config.train.stateful) and its trainer eval metrics."""
  path = str(tmp_path_factory.mktemp('tools') / 'lm')
  return path, init_workdir(dates_lm_lstm.get_config('runlocal'), path, evaluate=True)


@pytest.fixture(scope='module')
def run(workdir):
  return inference.Run(workdir)


def tool(script, *args, stdin=None, stdin_bytes=None):
  """Runs experiments/<script> on one CPU device (stdin: text; stdin_bytes: raw bytes)."""
  env = dict(os.environ, PYTHONPATH=REPO)
  env['XLA_FLAGS'] = ' '.join(f for f in env.get('XLA_FLAGS', '').split() if 'device_count' not in f)
  cmd = [sys.executable, os.path.join(REPO, 'experiments', script), *args]
  if stdin_bytes is not None:
    proc = scripts.run(cmd, input=stdin_bytes, timeout=180, cwd=REPO, env=env)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors='replace'),
                                       proc.stderr.decode(errors='replace'))
  return scripts.run(cmd, input=stdin, text=True, timeout=180, cwd=REPO, env=env)


def eval_record(workdir, step):
  return [r for r in reporting.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
          if r['split'] == 'eval' and r['step'] == step][-1]


def assert_trees_close(a, b, **kw):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


def test_evaluate_library_matches_the_trainer_for_every_checkpoint_choice(workdir, run):
  assert averaging.list_steps(workdir) == [10, 15, 20]
  for checkpoint, step in [('latest', 20), ('10', 10)]:
    params, info = run.restore(checkpoint)
    assert (info.slot, info.step) == ('last', step)
    report = run.evaluate(params, info)
    expected = eval_record(workdir, step)
    for key in ('loss', 'accuracy', 'perplexity', 'exact_match', 'bleu', 'chrf'):
      assert report['metrics'][key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key
  assert 'tok:none' in report['signatures']['bleu'] and 'nc:6' in report['signatures']['chrf']
  assert len(report['predictions']) == report['num_examples'] == 100

  best_step = json.load(open(os.path.join(workdir, 'summary.json')))['best_step']
  params, info = run.restore('best')
  assert (info.slot, info.step) == ('best', best_step)
  assert_trees_close(params, run.restore(str(best_step))[0], rtol=0, atol=0)
  params, info = run.restore(average_last=2)
  assert info.averaged_steps == (15, 20) and info.label == 'avg2-last-20'
  p15, p20 = (run.restore(s)[0] for s in ('15', '20'))
  assert_trees_close(params, jax.tree.map(lambda a, b: (a + b) / 2, p15, p20), rtol=1e-6, atol=1e-7)


def test_evaluate_script_beam_search_writes_report(workdir, tmp_path):
  out = tmp_path / 'report.json'
  proc = tool('evaluate.py', f'--workdir={workdir}', '--checkpoint=best', '--beam_size=2',
              '--alpha=0.6', f'--output={out}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'BLEU signature: nrefs:1' in proc.stdout and 'chrF signature:' in proc.stdout
  report = json.loads(out.read_text())
  assert report['checkpoint']['slot'] == 'best'
  assert report['decoding'] == {'method': 'beam', 'beam_size': 2, 'alpha': 0.6, 'max_length': 12}
  assert set(report['metrics']) >= {'loss', 'accuracy', 'perplexity', 'exact_match', 'bleu', 'chrf'}
  assert report['signatures']['bleu'].startswith('nrefs:1|')


def test_decode_stdin_greedy_keeps_alignment_and_truncates(workdir, run):
  lines = [SENTENCE, '', LONG, '0 7 / 1 5 / 1 9 3 2']
  proc = tool('decode.py', f'--workdir={workdir}', '--batch_size=3', stdin='\n'.join(lines) + '\n')
  assert proc.returncode == 0, proc.stderr[-3000:]
  outputs = proc.stdout.split('\n')[:-1]
  assert len(outputs) == 4 and outputs[1] == ''
  assert 'input line 3 has 30 tokens; truncated to the first 16' in proc.stderr
  params, _ = run.restore()
  warnings = []
  expected = list(run.decode_lines(params, lines, inference.DecodeOptions(batch_size=3),
                                   warn=warnings.append))
  assert outputs == expected and len(warnings) == 1
  assert all(outputs[i] for i in (0, 2, 3))


@pytest.mark.parametrize('flags', [['--beam_size=2', '--alpha=0.6'],
                                   ['--temperature=1.0', '--top_k=5', '--top_p=0.9', '--seed=3']])
def test_decode_file_beam_and_sampling(workdir, run, tmp_path, flags):
  src, out = tmp_path / 'src.txt', tmp_path / 'out.txt'
  src.write_text(f'{SENTENCE}\n\n{LONG}\n')
  proc = tool('decode.py', f'--workdir={workdir}', f'--input={src}', f'--output={out}', *flags)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout == '' and 'truncated' in proc.stderr
  outputs = out.read_text().split('\n')
  assert len(outputs) == 4 and outputs[1] == '' and outputs[3] == ''  # 3 lines + final newline
  vocab = set(run.task.tokenizers['targets'].tokens)
  assert all(tok in vocab for line in outputs for tok in line.split())
  if flags[0].startswith('--beam'):
    params, _ = run.restore()
    expected = list(run.decode_lines(params, [SENTENCE, '', LONG],
                                     inference.DecodeOptions(beam_size=2), warn=lambda _: None))
    assert outputs[:3] == expected


def test_sampling_is_deterministic_per_seed(run):
  params, _ = run.restore()
  sample = lambda seed: list(run.decode_lines(params, [SENTENCE] * 4, inference.DecodeOptions(
      temperature=1.0, seed=seed, batch_size=4)))
  assert sample(1) == sample(1)


def test_missing_workdir_is_exit_2_naming_the_path(tmp_path):
  missing = tmp_path / 'no_such_run'
  proc = tool('decode.py', f'--workdir={missing}', stdin='x\n')
  assert proc.returncode == 2
  assert f'--workdir {missing} does not exist' in proc.stderr and 'Traceback' not in proc.stderr


def test_missing_checkpoint_and_bad_flags_are_clear_errors(workdir, tmp_path):
  empty = tmp_path / 'untrained'
  shutil.copytree(os.path.join(workdir, 'tokenizers'), empty / 'tokenizers')
  shutil.copy(os.path.join(workdir, 'config.json'), empty / 'config.json')
  with pytest.raises(inference.ToolError, match=re.escape(f'no checkpoint in {empty}/checkpoints/last')):
    inference.Run(str(empty)).restore('latest')
  with pytest.raises(inference.ToolError, match=r'--checkpoint=7: no such step .*last: \[10, 15, 20\]'):
    inference.resolve_checkpoint(workdir, '7')
  with pytest.raises(inference.ToolError, match='--temperature > 0 samples and --beam_size > 1'):
    inference.DecodeOptions(beam_size=2, temperature=1.0).validate()
  with pytest.raises(averaging.CheckpointError, match='keeps 3'):
    averaging.select_steps([10, 15, 20], last=5, where='x')


def test_averaging_identical_and_different_checkpoints(workdir, run):
  p10 = averaging.read_checkpoint(workdir, 'last', 10)[0]['params']
  p20 = averaging.read_checkpoint(workdir, 'last', 20)[0]['params']
  same = averaging.average_trees([p10, p10, p10])
  for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(p10)):
    np.testing.assert_array_equal(a, b)
    assert a.dtype == b.dtype
  assert_trees_close(averaging.average_trees([p10, p20]),
                     jax.tree.map(lambda a, b: (a + b) / 2, p10, p20), rtol=1e-6, atol=1e-7)

  before = {s: averaging.list_steps(workdir, s) for s in ('last', 'best')}
  path, steps = averaging.write_averaged(workdir, steps=[10, 20], output_step=99)
  assert steps == [10, 20] and path == os.path.join(workdir, 'checkpoints', 'averaged', '99')
  params, info = run.restore('averaged')
  assert (info.slot, info.step, info.averaged_steps) == ('averaged', 99, (10, 20))
  assert_trees_close(params, jax.tree.map(lambda a, b: (a + b) / 2, p10, p20), rtol=1e-6, atol=1e-7)
  with pytest.raises(averaging.CheckpointError, match='already exists and is never overwritten'):
    averaging.write_averaged(workdir, last=2, output_step=99)
  assert {s: averaging.list_steps(workdir, s) for s in ('last', 'best')} == before
  shutil.rmtree(path)


def test_attention_heatmap_transformer(run, tmp_path):
  params, info = run.restore()
  attn = attention_plot.cross_attention(run, params, SENTENCE, layer=-1, head=1)
  check_heatmap(attn, attention_plot.save_heatmap(attn, str(tmp_path / 'attention.png')))
  mean = attention_plot.cross_attention(run, params, LONG, layer=0, head=-1)  # truncated source
  assert mean.weights.shape[1] == 16 and mean.head is None
  np.testing.assert_allclose(mean.weights.sum(axis=1), 1.0, atol=1e-5)
  with pytest.raises(inference.ToolError, match='--head=4: the layer has 4 heads'):
    attention_plot.cross_attention(run, params, SENTENCE, head=4)


def test_attention_heatmap_lstm(lstm_workdir, tmp_path):
  png = str(tmp_path / 'lstm.png')
  check_heatmap(attention_plot.plot_workdir(lstm_workdir, SENTENCE, png, layer=0, head=0), png)
  with pytest.raises(inference.ToolError, match='--layer=1: the LSTM decoder has one attention'):
    attention_plot.plot_workdir(lstm_workdir, SENTENCE, png, layer=1)


def check_heatmap(attn, png):
  """(target × source) weights whose rows sum to 1 over the real source tokens; a PNG."""
  num_out = len(attn.target_tokens)
  assert attn.weights.shape == (num_out, 7) and attn.source_tokens == SENTENCE.split()
  assert 1 <= num_out <= 12 and (attn.target_tokens[-1] == '</s>' or num_out == 12)
  assert np.all(attn.weights >= 0)
  np.testing.assert_allclose(attn.weights.sum(axis=1), 1.0, atol=1e-5)
  img = mpl_image.imread(png)
  assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_language_model_continues_prompts_and_evaluates_like_the_trainer(lm_workdir):
  path, expected = lm_workdir
  run = inference.Run(path)
  params, info = run.restore()
  lines, warnings = ['twenty third of', '', ' '.join(['march'] * 30)], []
  greedy = list(run.decode_lines(params, lines, inference.DecodeOptions(batch_size=2),
                                 warn=warnings.append))
  assert len(greedy) == 3 and greedy[1] == '' and greedy[0]
  assert len(greedy[0].split()) <= 20 - 3  # max_length 20 holds the prompt and its continuation
  assert len(warnings) == 1 and 'prompt line 3 has 30 tokens; truncated to the last 19' in warnings[0]
  sample = lambda: list(run.decode_lines(params, lines[:2], inference.DecodeOptions(
      temperature=1.0, top_p=0.9, seed=5), warn=warnings.append))
  assert sample() == sample()
  with pytest.raises(inference.ToolError, match='not supported for language-model'):
    list(run.decode_lines(params, lines, inference.DecodeOptions(beam_size=2)))
  report = run.evaluate(params, info)
  assert 'decoding' not in report and info.step == 0
  for key in ('loss', 'accuracy', 'perplexity'):
    assert report['metrics'][key] == pytest.approx(expected[key], rel=1e-5), key
  with pytest.raises(inference.ToolError, match='only seq2seq runs decode'):
    run.evaluate(params, info, beam_size=2)


def test_evaluate_test_split_reads_the_test_files(tmp_path):
  """--split=test evaluates config.task.source.test_files; a run without them is a clear error."""
  from configs import multi30k_transformer  # pylint: disable=g-import-not-at-top
  en = ['a man rides a horse .', 'two dogs play .', 'a woman reads .', 'kids run .']
  de = ['ein mann reitet ein pferd .', 'zwei hunde spielen .', 'eine frau liest .', 'kinder laufen .']
  data = tmp_path / 'data' / 'multi30k' / 'tok'
  data.mkdir(parents=True)
  for split, n in (('train', 40), ('val', 4), ('test_2016_flickr', 3)):
    for lang, lines in (('en', en), ('de', de)):
      (data / f'{split}.lc.norm.tok.{lang}').write_text('\n'.join((lines * n)[:n]) + '\n')
  config = multi30k_transformer.get_config(f'{tmp_path / "data"},runlocal')
  config.task.tokenizer.vocab_size = 40
  path = str(tmp_path / 'run')
  init_workdir(config, path)
  assert workdir_tools.evaluate_workdir(path, split='eval')['num_examples'] == 4
  report = workdir_tools.evaluate_workdir(path, split='test')
  assert report['num_examples'] == 3 and report['split'] == 'test'
  assert report['output'].endswith('_test.json')

  cfg = json.load(open(os.path.join(path, 'config.json')))
  cfg['task']['source']['test_files'] = []
  json.dump(cfg, open(os.path.join(path, 'config.json'), 'w'))
  with pytest.raises(inference.ToolError, match='test_files is empty'):
    workdir_tools.evaluate_workdir(path, split='test')
