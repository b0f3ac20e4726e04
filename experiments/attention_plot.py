r"""Draws the source × target cross-attention of a greedy-decoded sentence as a PNG heatmap.

    python experiments/attention_plot.py --workdir=workdirs/default \
        --text="twenty third of march nineteen ninety four" --layer=-1 --head=0 --output=attn.png

Works for Transformer (any decoder layer and head; --head=-1 averages the heads) and
attentional LSTM runs (--layer=0 --head=0).
"""

import sys

from absl import app
from absl import flags

from lmjax.config import configlib
from lmjax.tools import attention_plot
from lmjax.tools import inference

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run directory.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'latest', 'latest, best, averaged or a step number.')
_TEXT = flags.DEFINE_string('text', None, 'Source sentence.')
_LAYER = flags.DEFINE_integer('layer', -1, 'Decoder layer (-1 = last).')
_HEAD = flags.DEFINE_integer('head', 0, 'Attention head (-1 = mean over heads).')
_OUTPUT = flags.DEFINE_string('output', 'attention.png', 'PNG file to write.')
flags.mark_flags_as_required(['workdir', 'text'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  inference.setup_process()
  try:
    attn = attention_plot.plot_workdir(_WORKDIR.value, _TEXT.value, _OUTPUT.value, _LAYER.value,
                                       _HEAD.value, _CHECKPOINT.value)
  except inference.USER_ERRORS as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'prediction: {attn.prediction}')
  print(f'wrote {_OUTPUT.value} ({attn.weights.shape[0]} target × {attn.weights.shape[1]} source tokens)')


if __name__ == '__main__':
  app.run(main, flags_parser=configlib.flags_parser)
