"""The task registry: task name → builder(config.task, workdir) → Task.

Task modules register their builders with `@register('name')`; `lmjax.data.tasks`
imports every task module, so looking a name up there sees them all.
"""

from typing import Callable, Dict, Mapping, Optional

from lmjax.data.task_def import Task

Builder = Callable[[Mapping, Optional[str]], Task]
TASKS: Dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
  """Decorator: registers a task builder under `name` (config.task.name).

  Args:
    name: the task's name; registering a name twice is an error.

  Returns:
    The decorator, which returns the builder unchanged.
  """
  def add(builder: Builder) -> Builder:
    if name in TASKS:
      raise ValueError(f'task {name!r} is registered twice ({TASKS[name].__module__} and '
                       f'{builder.__module__})')
    TASKS[name] = builder
    return builder
  return add
