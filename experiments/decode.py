r"""Translates, generates, classifies or tags text with a trained run: one output line per
input line.

    echo "twenty third of march nineteen ninety four" | \
        python experiments/decode.py --workdir=workdirs/default [--beam_size=4]
    python experiments/decode.py --workdir=workdirs/default --input=src.txt --output=out.txt \
        [--temperature=0.8 --top_k=20 --top_p=0.9 --seed=1] [--checkpoint=best]

Classifier runs write one label name per line and tagger runs one tag per whitespace-
separated word (`lmjax.tools.labeling`):

    echo "Paris is lovely" | python experiments/decode.py --workdir=workdirs/wnut17

A sentence VAE's run (config.model.kind='vae', `lmjax.tools.vae_decode`) reconstructs each
input line from its posterior mean, samples from the prior, or walks between two sentences:

    python experiments/decode.py --workdir=workdirs/ptb_vae --num_samples=10 < /dev/null
    printf 'i went to the store\nthe market fell\n' | \
        python experiments/decode.py --workdir=workdirs/ptb_vae --interpolate=5

`--quantize=int8` decodes with the run quantized to int8 (qwix; docs/COMPRESSION.md).

Empty input lines give empty output lines; longer inputs than the model was trained
on are truncated with a warning on stderr.
"""

import sys

from absl import app
from absl import flags

from lmjax.config import configlib
from lmjax.tools import decoders
from lmjax.tools import inference

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run directory.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'latest', 'latest, best, averaged or a step number.')
_INPUT = flags.DEFINE_string('input', '-', 'Source sentences, one per line (- = stdin).')
_OUTPUT = flags.DEFINE_string('output', '-', 'Outputs, one per line (- = stdout).')
_BEAM_SIZE = flags.DEFINE_integer('beam_size', 1, 'Beam width; 1 = greedy.')
_ALPHA = flags.DEFINE_float('alpha', 0.6, 'Beam-search length-penalty exponent.')
_TEMPERATURE = flags.DEFINE_float('temperature', 0.0, 'Sampling temperature; 0 = no sampling.')
_TOP_K = flags.DEFINE_integer('top_k', 0, 'Sample among the k most likely tokens (0 = all).')
_TOP_P = flags.DEFINE_float('top_p', 1.0, 'Nucleus sampling mass (1 = all).')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 64, 'Sentences per batch.')
_MAX_LENGTH = flags.DEFINE_integer('max_length', 0, 'Output tokens incl. EOS (0 = as in training).')
_ENCODING_ERRORS = flags.DEFINE_enum('encoding_errors', 'strict', ['strict', 'replace'],
                                     'Input bytes that are not UTF-8: strict = an error naming '
                                     'the line; replace = U+FFFD (files and stdin alike).')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', 0, 'VAE runs: sentences decoded from prior '
                                    'samples (the input is not read); 0 = off.')
_INTERPOLATE = flags.DEFINE_integer('interpolate', 0, 'VAE runs: points K on the latent path '
                                    'between each pair of input lines (K lines per pair); 0 = off.')
_QUANTIZE = flags.DEFINE_string(
    'quantize', 'none', "'none', or decode in int8 (qwix post-training quantization): 'int8' "
    "(int8 weights and activations) or 'int8_weights' (int8 weights only).")
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  inference.setup_process()
  options = inference.DecodeOptions(
      beam_size=_BEAM_SIZE.value, alpha=_ALPHA.value, temperature=_TEMPERATURE.value,
      top_k=_TOP_K.value, top_p=_TOP_P.value, seed=_SEED.value, batch_size=_BATCH_SIZE.value,
      max_length=_MAX_LENGTH.value)
  try:
    decoders.decode_workdir(_WORKDIR.value, _INPUT.value, _OUTPUT.value, options, _CHECKPOINT.value,
                            encoding_errors=_ENCODING_ERRORS.value, num_samples=_NUM_SAMPLES.value,
                            interpolate=_INTERPOLATE.value, quantize=_QUANTIZE.value)
  except inference.USER_ERRORS as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=configlib.flags_parser)
