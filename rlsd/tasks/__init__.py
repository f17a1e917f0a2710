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
from rlsd.tasks.record import ChatMessage, Task

TaskGenerator = Callable[..., tuple[list[Task], list[Task]]]


class UnknownTaskGeneratorError(KeyError):
    """No task generator is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0]) if self.args else ""


TASK_GENERATORS: dict[str, TaskGenerator] = {"arithmetic": generate_arithmetic_tasks}
TASK_CONFIGS: dict[str, type[BaseModel]] = {"arithmetic": ArithmeticTaskConfig}


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
    "ChatMessage",
    "Task",
    "TaskGenerator",
    "UnknownTaskGeneratorError",
    "generate_arithmetic_tasks",
    "generate_tasks",
]
