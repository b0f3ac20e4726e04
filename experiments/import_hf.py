r"""Imports a Hugging Face checkpoint (T5 v1.0 / v1.1, mT5, GPT-2) into a new lmjax workdir.

    python experiments/import_hf.py --hf_dir=DIR --workdir=workdirs/t5 \
        --config=configs/multi30k_transformer.py:/path/to/data
    python experiments/import_hf.py --hf_model=t5-small --workdir=workdirs/t5 --config=...
    python experiments/import_hf.py --hf_model=gpt2 --workdir=workdirs/gpt2 \
        --config=configs/shakespeare_char.py:/path/to/data

DIR holds config.json, model.safetensors (or shards + model.safetensors.index.json) and
the tokenizer (T5: spiece.model; GPT-2: tokenizer.json); --hf_model downloads them with
huggingface_hub (needs the network; offline, give the local --hf_dir). --config is the
task and training setup to evaluate and fine-tune with; its model section is replaced by
the checkpoint's, and its tokenizer by the checkpoint's. Then:

    python experiments/evaluate.py --workdir=workdirs/t5
    python experiments/decode.py --workdir=workdirs/t5 --input=sources.txt
    python experiments/train.py --config=configs/finetune.py:workdirs/t5 --workdir=workdirs/t5_ft

Every tensor must be used and every parameter assigned, or one error lists them; nothing
is written then.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from lmjax.config import configlib
from lmjax.hf import convert
from lmjax.hf.files import HFError
from lmjax.tools import inference

_HF_DIR = flags.DEFINE_string('hf_dir', None, 'Hugging Face model directory (local).')
_HF_MODEL = flags.DEFINE_string('hf_model', None,
                                'Or a model name on the Hugging Face hub (downloaded).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'The new lmjax run directory.')
_PARAM_DTYPE = flags.DEFINE_enum('param_dtype', 'float32', list(convert.PARAM_DTYPES),
                                 "'float32' casts the tensors; 'keep' keeps e.g. bfloat16.")
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config (task, training).')
flags.mark_flags_as_required(['workdir', 'config'])


def _download(name: str) -> str:
  try:
    import huggingface_hub  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise HFError("--hf_model needs huggingface_hub (pip install huggingface_hub), or give "
                  "a local --hf_dir") from None
  try:
    return huggingface_hub.snapshot_download(
        name, allow_patterns=['config.json', '*.safetensors', '*.safetensors.index.json',
                              'spiece.model', 'tokenizer.json'])
  except Exception as e:  # pylint: disable=broad-except  (network, auth, missing repo)
    raise HFError(f'--hf_model={name}: download failed ({type(e).__name__}: {e}); offline, '
                  'pass the local --hf_dir') from e


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  inference.setup_process()
  try:
    if bool(_HF_DIR.value) == bool(_HF_MODEL.value):
      raise HFError('give exactly one of --hf_dir=DIR or --hf_model=NAME')
    hf_dir = _HF_DIR.value or _download(_HF_MODEL.value)
    report = convert.import_checkpoint(hf_dir, _WORKDIR.value, _CONFIG.value, _PARAM_DTYPE.value)
  except (HFError, *inference.USER_ERRORS) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'imported {hf_dir} → {_WORKDIR.value}: {convert.report_line(report)}')


if __name__ == '__main__':
  app.run(main, flags_parser=configlib.flags_parser)
