"""Tasks: a data source + tokenizers + features + how predictions are scored.

`build_task(config.task, workdir)` looks `config.task.name` up in TASKS: task name →
builder(config.task, workdir) → `lmjax.data.task_def.Task`. The builders live in
`text_tasks` (synthetic_dates, text_seq2seq, text_lm), `synthetic_tasks`
(synthetic_dates_lm / _classify / _tag), `labeled_tasks` (text_classify, text_tag) and
`pretrain_tasks` (text_span_corruption, text_masked_lm).
"""

from typing import Callable, Dict, Mapping, Optional

from lmjax.data import labeled_tasks
from lmjax.data import pretrain_tasks
from lmjax.data import synthetic_tasks
from lmjax.data import text_tasks
from lmjax.data.task_def import Task

Builder = Callable[[Mapping, Optional[str]], Task]
TASKS: Dict[str, Builder] = {
    'synthetic_dates': text_tasks.synthetic_dates,
    'text_seq2seq': text_tasks.text_seq2seq,
    'text_lm': text_tasks.text_lm,
    'synthetic_dates_lm': synthetic_tasks.synthetic_dates_lm,
    'synthetic_dates_classify': synthetic_tasks.synthetic_dates_classify,
    'synthetic_dates_tag': synthetic_tasks.synthetic_dates_tag,
    'text_classify': labeled_tasks.text_classify,
    'text_tag': labeled_tasks.text_tag,
    'text_span_corruption': pretrain_tasks.text_span_corruption,
    'text_masked_lm': pretrain_tasks.text_masked_lm,
}


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
