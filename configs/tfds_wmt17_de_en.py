r"""Transformer on WMT17 De→En from TFDS (newstest2016 eval).

    python experiments/train.py --config=configs/tfds_wmt17_de_en.py:tfds_data_dir=~/tensorflow_datasets --workdir=workdirs/tfds_wmt17_de_en

Needs internet on first use (TFDS downloads and prepares 'wmt17_translate/de-en') and
`pip install -e '.[tfds]'`. Optional argument: `tfds_data_dir=DIR` (TFDS data
directory; default ~/tensorflow_datasets) and `runlocal` (smoke test on a few examples).
Everything but the dataset is configs/tfds_wmt14_de_en.py.
"""

import ml_collections

from configs import tfds_wmt14_de_en


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the config; `arg` = '[tfds_data_dir=DIR][,runlocal]'."""
  c = tfds_wmt14_de_en.get_config(arg)
  # TFDS dataset name.
  c.task.source.tfds_name = 'wmt17_translate/de-en'
  return c
