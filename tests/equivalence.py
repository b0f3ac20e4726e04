"""20-step training losses of every objective, recorded before the objectives refactor.

    python -m tests.equivalence --record tests/data/objective_losses.json   # once, before
    python -m tests.equivalence --check tests/data/objective_losses.json    # after: 1e-5

trains each case below for 20 steps (dropout off unless the case says so) and writes
its per-step training losses, or compares them with the recorded ones (max relative
difference per case). A behaviour change moves these losses far more than float32
reordering (1e-5) does. (Not a suite test: ~2 minutes of compiles, and another CPU's
float32 reordering would need a looser bound; run it before and after a refactor.)
"""

import argparse
import json
import os
import tempfile

STEPS = 20


def _set(config, overrides):
  config.update_from_flattened_dict(overrides)
  return config


def _no_dropout(config):
  for key in ('dropout_rate', 'attention_dropout_rate', 'word_dropout', 'decoder_word_dropout'):
    if key in config.model:
      config.model[key] = 0.0
  return config


def _short(config):
  return _set(config, {'train.num_train_steps': STEPS, 'train.log_every': 1,
                       'train.eval_every': 1000, 'train.checkpoint_every': 1000,
                       'eval.num_samples': 0, 'train.async_checkpointing': False})


def build(case):
  """The config of a case name (see CASES)."""
  # pylint: disable=g-import-not-at-top
  from configs import dates_classify_transformer, dates_lm_lstm, dates_lstm, dates_tag_lstm
  from configs import dates_vae, default
  name, _, variant = case.partition(':')
  if name == 'transformer_encdec':
    config = default.get_config('runlocal')
  elif name == 'transformer_decoder':
    config = _set(default.get_config('runlocal'), {
        'task.name': 'synthetic_dates_lm', 'model.kind': 'decoder',
        'train.best_metric': 'perplexity', 'train.best_mode': 'min'})
    config.task.lm_text = 'source'
    config.task.max_target_length = 20
  elif name == 'transformer_classify':
    config = dates_classify_transformer.get_config('runlocal')
  elif name == 'lstm_tag_crf':
    config = dates_tag_lstm.get_config('runlocal')
  elif name == 'lstm_encdec':
    config = dates_lstm.get_config('runlocal')
  elif name == 'lstm_lm_stateful':
    config = dates_lm_lstm.get_config('runlocal')
  elif name == 'lstm_vae':
    config = dates_vae.get_config('runlocal')
  elif name == 'kd_student':
    config = _set(default.get_config('runlocal'), {'train.kd_weight': 0.5})
  else:
    raise ValueError(case)
  config = _short(config)
  return config if variant == 'dropout' else _no_dropout(config)


CASES = ('transformer_encdec', 'transformer_decoder', 'transformer_classify', 'lstm_tag_crf',
         'lstm_encdec', 'lstm_lm_stateful', 'lstm_vae', 'kd_student',
         'transformer_encdec:dropout', 'transformer_classify:dropout')


def losses(case, root):
  """Per-step training losses of `case`, trained in a fresh folder under `root`."""
  # pylint: disable=g-import-not-at-top
  from lmjax.train import loop
  from lmjax.train import reporting
  config = build(case)
  if config.train.kd_weight:
    teacher = os.path.join(root, 'teacher')
    if not os.path.isdir(teacher):
      loop.train_and_evaluate(_no_dropout(_short(build('transformer_encdec'))), teacher)
    config.train.kd_teacher_workdir = teacher
  workdir = os.path.join(root, case.replace(':', '_'))
  loop.train_and_evaluate(config, workdir)
  return [r['loss'] for r in reporting.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
          if r['split'] == 'train']


def max_rel_diff(got, want):
  """Largest |got − want| / max(|want|, 1) over the steps (inf when the counts differ)."""
  if len(got) != len(want):
    return float('inf')
  return max(abs(g - w) / max(abs(w), 1.0) for g, w in zip(got, want))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--record', help='write the losses of every case to this JSON file')
  parser.add_argument('--check', help='compare with the losses recorded in this JSON file')
  parser.add_argument('--cases', default=','.join(CASES))
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as root:
    out = {case: losses(case, root) for case in args.cases.split(',')}
  if args.record:
    with open(args.record, 'w') as f:
      json.dump(out, f, indent=1)
  if args.check:
    with open(args.check) as f:
      want = json.load(f)
    worst = 0.0
    for case, got in out.items():
      diff = max_rel_diff(got, want[case])
      worst = max(worst, diff)
      print(f'{case:32s} max relative difference {diff:.2e}')
    print('OK (<= 1e-5)' if worst <= 1e-5 else 'CHANGED (> 1e-5)')


if __name__ == '__main__':
  main()
