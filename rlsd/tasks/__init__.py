"""Task records and the generators that produce them.

``TASK_GENERATORS`` maps a config string to a generator: a callable taking that generator's
config (its pydantic model or a plain mapping) and returning ``(train, heldout)`` task lists.
``TASK_CONFIGS`` maps the same names to the config models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from rlsd.tasks.arithmetic import ArithmeticTaskConfig, generate_arithmetic_tasks
from rlsd.tasks.bar_chart import BarChartTaskConfig, generate_bar_chart_tasks
from rlsd.tasks.easy_vqa import EasyVQATaskConfig, generate_easy_vqa_tasks
from rlsd.tasks.images import ImageStore, contact_sheet, default_image_store, resolve_image
from rlsd.tasks.record import ChatMessage, Task
from rlsd.tasks.shape_count import ShapeCountTaskConfig, generate_shape_count_tasks

TaskGenerator = Callable[..., tuple[list[Task], list[Task]]]


class UnknownTaskGeneratorError(KeyError):
    """No task generator is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0]) if self.args else ""


TASK_GENERATORS: dict[str, TaskGenerator] = {
    "arithmetic": generate_arithmetic_tasks,
    "bar_chart": generate_bar_chart_tasks,
    "shape_count": generate_shape_count_tasks,
    "easy_vqa": generate_easy_vqa_tasks,
}
TASK_CONFIGS: dict[str, type[BaseModel]] = {
    "arithmetic": ArithmeticTaskConfig,
    "bar_chart": BarChartTaskConfig,
    "shape_count": ShapeCountTaskConfig,
    "easy_vqa": EasyVQATaskConfig,
}


def generate_tasks(
    name: str, cfg: BaseModel | Mapping[str, Any] | None = None
) -> tuple[list[Task], list[Task]]:
    """Run the generator registered as ``name``; ``cfg`` may be a model, a mapping or None."""
    if name not in TASK_GENERATORS:
        known = ", ".join(sorted(TASK_GENERATORS))
        raise UnknownTaskGeneratorError(
            f"unknown task generator {name!r}; known generators: {known}"
        )
    if cfg is None:
        cfg = {}
    if isinstance(cfg, BaseModel):
        return TASK_GENERATORS[name](cfg)
    return TASK_GENERATORS[name](TASK_CONFIGS[name].model_validate(dict(cfg)))


__all__ = [
    "TASK_CONFIGS",
    "TASK_GENERATORS",
    "ArithmeticTaskConfig",
    "BarChartTaskConfig",
    "ChatMessage",
    "EasyVQATaskConfig",
    "ImageStore",
    "ShapeCountTaskConfig",
    "Task",
    "TaskGenerator",
    "UnknownTaskGeneratorError",
    "contact_sheet",
    "default_image_store",
    "generate_arithmetic_tasks",
    "generate_bar_chart_tasks",
    "generate_easy_vqa_tasks",
    "generate_shape_count_tasks",
    "generate_tasks",
    "resolve_image",
]
