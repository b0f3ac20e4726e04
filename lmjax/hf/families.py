"""The model families lmjax converts, by Hugging Face `model_type`.

Each family module gives `model_config(hf_config, tensor_names)` (config.model fields),
`table(model_fields)` (its `mapping.Table`), `hf_config(model_fields)` (config.json for
export) and `check_expressible(model_fields)`; `EMBEDDING` (the parameter whose rows are
the vocabulary); and its tokenizer bridge: `TOKENIZER_FILE` (spiece.model, tokenizer.json),
`TOKENIZER_HINT` (what that file is, for errors), `TOKENIZER_TYPE`
(config.task.tokenizer.type), `tokenizer(file bytes, hf_config)` (the lmjax tokenizer) and
`tokenizer_file(tokenizer)` (the file back, for export). BERT has no tokenizer bridge yet:
its `tokenizer` raises HFError, so its checkpoints convert at the table level only.
"""

from types import ModuleType
from typing import Any, Dict

from lmjax.hf import bert
from lmjax.hf import gpt2
from lmjax.hf import t5
from lmjax.hf.files import HFError

FAMILIES: Dict[str, ModuleType] = {name: family for family in (t5, gpt2, bert)
                                   for name in family.MODEL_TYPES}


def by_model_type(hf_config: Dict[str, Any], where: str) -> ModuleType:
  """The family of a config.json; HFError naming `where` and the supported types."""
  model_type = hf_config.get('model_type')
  if model_type not in FAMILIES:
    raise HFError(f'{where}: model_type={model_type!r} is not one lmjax converts '
                  f'(supported: {", ".join(sorted(FAMILIES))})')
  return FAMILIES[model_type]


def by_model_config(model: Dict[str, Any]) -> ModuleType:
  """The family whose architecture an lmjax config.model describes.

  Raises:
    HFError: no family can hold it (listing what each family needs changed).
  """
  problems = []
  for family in dict.fromkeys(FAMILIES.values()):
    try:
      family.check_expressible(model)
      return family
    except HFError as e:
      problems.append(str(e))
  raise HFError('no Hugging Face family fits config.model: ' + ' | '.join(problems))
