r"""Evaluates a checkpoint of a training run on its eval split; writes a JSON report.

    python experiments/evaluate.py --workdir=workdirs/default [--checkpoint=best] \
        [--average_last=5] [--beam_size=4 --alpha=0.6] [--outside_bias=-1] [--output=report.json]
    python experiments/evaluate.py --workdir=W0 --ensemble=W1,W2 --split=test   # classify / tag
    python experiments/evaluate.py --workdir=W --quantize=int8   # int8 (qwix), docs/COMPRESSION.md

Loss, token accuracy and perplexity come from the trainer's eval step; exact match,
BLEU and chrF from decoding (greedy, or beam search with --beam_size > 1), with the
sacreBLEU signatures printed and stored in the report. The report also gives the number
of parameters, their bytes (float32, and int8 with --quantize) and their sparsity.
"""

import sys

from absl import app
from absl import flags

from lmjax.config import configlib
from lmjax.tools import inference
from lmjax.tools import param_report
from lmjax.tools import quantized
from lmjax.tools import workdir_tools

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run directory.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'latest', 'latest, best, averaged or a step number.')
_AVERAGE_LAST = flags.DEFINE_integer('average_last', 0,
                                     'Evaluate the mean of the newest N kept checkpoints (0 = off).')
_SPLIT = flags.DEFINE_string(
    'split', 'eval', "'eval' (as in training) or 'test' (config.task.source.test_files; "
    'final numbers only).')
_BEAM_SIZE = flags.DEFINE_integer('beam_size', 1, 'Beam width; 1 = greedy decoding.')
_ALPHA = flags.DEFINE_float('alpha', 0.6, 'Beam-search length-penalty exponent.')
_OUTSIDE_BIAS = flags.DEFINE_float(
    'outside_bias', None, "Taggers: score added to the outside tag 'O' before decoding; < 0 "
    'trades precision for recall (default: the run\'s config.eval.outside_bias).')
_ENSEMBLE = flags.DEFINE_list(
    'ensemble', [], 'Classifiers and taggers: other workdirs of the same config (e.g. other '
    'seeds) that predict together with --workdir from their mean scores (lmjax/tools/ensemble.py).')
_QUANTIZE = flags.DEFINE_string(
    'quantize', 'none', "'none', or evaluate in int8 (qwix post-training quantization): 'int8' "
    "(int8 weights and activations) or 'int8_weights' (int8 weights only).")
_IW_SAMPLES = flags.DEFINE_integer(
    'iw_samples', None, "VAE runs: importance samples per sentence for the IW NLL bound "
    "(default: the run's config.eval.iw_samples; 0 = off).")
_OUTPUT = flags.DEFINE_string('output', '', 'Report JSON (default WORKDIR/eval_<checkpoint>_<split>.json).')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  inference.setup_process()
  try:
    if _QUANTIZE.value != 'none':
      if _ENSEMBLE.value:
        raise inference.ToolError('--quantize and --ensemble: evaluate an ensemble in float '
                                  '(drop --quantize)')
      report = quantized.evaluate_workdir(_WORKDIR.value, _CHECKPOINT.value, _AVERAGE_LAST.value,
                                          _SPLIT.value, _BEAM_SIZE.value, _ALPHA.value,
                                          _OUTPUT.value, _OUTSIDE_BIAS.value, _QUANTIZE.value)
    else:
      report = workdir_tools.evaluate_workdir(_WORKDIR.value, _CHECKPOINT.value,
                                              _AVERAGE_LAST.value, _SPLIT.value, _BEAM_SIZE.value,
                                              _ALPHA.value, _OUTPUT.value, _OUTSIDE_BIAS.value,
                                              _ENSEMBLE.value, iw_samples=_IW_SAMPLES.value)
  except inference.USER_ERRORS as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(workdir_tools.format_report(report))
  if report.get('params'):
    print(param_report.format_params(report))
  print(f"report: {report['output']}")


if __name__ == '__main__':
  app.run(main, flags_parser=configlib.flags_parser)
