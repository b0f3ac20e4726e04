r"""Exports an lmjax workdir's parameters as a Hugging Face checkpoint directory.

    python experiments/export_hf.py --workdir=workdirs/t5_ft --output=exported/t5_ft [--checkpoint=best]

Writes config.json, model.safetensors and the tokenizer (a SentencePiece vocabulary as
spiece.model; an imported GPT-2's as tokenizer.json);
`transformers.T5ForConditionalGeneration.from_pretrained(OUTPUT)` (or GPT2LMHeadModel)
loads it. The model must be one a supported family (T5, GPT-2) can hold, else one error
names the fields.
"""

import sys

from absl import app
from absl import flags

from lmjax.config import configlib
from lmjax.hf import convert
from lmjax.hf.files import HFError
from lmjax.tools import inference

_WORKDIR = flags.DEFINE_string('workdir', None, 'lmjax run directory.')
_OUTPUT = flags.DEFINE_string('output', None, 'The new Hugging Face model directory.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'latest', "'latest', 'best', 'averaged' or a step.")
flags.mark_flags_as_required(['workdir', 'output'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  inference.setup_process()
  try:
    report = convert.export_checkpoint(_WORKDIR.value, _OUTPUT.value, _CHECKPOINT.value)
  except (HFError, *inference.USER_ERRORS) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'exported {_WORKDIR.value} → {_OUTPUT.value}: {convert.report_line(report)}')


if __name__ == '__main__':
  app.run(main, flags_parser=configlib.flags_parser)
