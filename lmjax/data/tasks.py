"""Tasks: a data source + tokenizers + features + how predictions are scored.

`build_task(config.task, workdir)` looks the task up in the registry
(`lmjax.data.registry.TASKS`), which the task modules fill when imported here:
`text_tasks` (synthetic_dates, text_seq2seq, text_lm), `synthetic_tasks`
(synthetic_dates_lm / _classify / _tag) and `labeled_tasks` (text_classify, text_tag).
"""

from typing import Mapping, Optional

from lmjax.data import labeled_tasks  # noqa: F401  (registers its tasks)
from lmjax.data import synthetic_tasks  # noqa: F401  (registers its tasks)
from lmjax.data import text_tasks  # noqa: F401  (registers its tasks)
from lmjax.data.registry import TASKS
from lmjax.data.task_def import Task  # noqa: F401  (tasks.Task is the public name)
from lmjax.data.text_common import load_or_build_tokenizer  # noqa: F401
from lmjax.data.text_tasks import preprocess_task  # noqa: F401


def build_task(task_config: Mapping, workdir: Optional[str]) -> Task:
  """Builds the task named by `task_config.name`.

  Args:
    task_config: `config.task`.
    workdir: where tokenizers are cached (None: do not cache).

  Returns:
    The Task.
  """
  name = task_config['name']
  if name not in TASKS:
    raise ValueError(f'config.task.name={name!r} is not a task; valid: {sorted(TASKS)}')
  return TASKS[name](task_config, workdir)
