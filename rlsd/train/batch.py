"""Building a step's batch: which tasks, their student and teacher prompts, and the leak check."""

from __future__ import annotations

import random

from transformers import PreTrainedTokenizerBase

from rlsd.tasks import leak
from rlsd.tasks.record import Task


class PrivilegedLeakError(ValueError):
    """A student prompt contains its task's privileged context (that would make RLSD into OPSD)."""


def tasks_for_step(tasks: list[Task], step: int, per_step: int, seed: int) -> list[Task]:
    """The global batch of optimizer step ``step``: a seeded shuffle per epoch, read in order.

    A pure function of (seed, step), so a resumed run sees the same data as an uninterrupted one.
    """
    if not tasks:
        raise ValueError("no training tasks")
    out: list[Task] = []
    position = step * per_step
    while len(out) < per_step:
        epoch, offset = divmod(position, len(tasks))
        order = list(range(len(tasks)))
        random.Random(f"{seed}/epoch/{epoch}").shuffle(order)
        take = min(per_step - len(out), len(tasks) - offset)
        out.extend(tasks[i] for i in order[offset : offset + take])
        position += take
    return out


def _ids(encoded) -> list[int]:
    if hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return list(encoded)


def student_prompt_ids(tokenizer: PreTrainedTokenizerBase, task: Task) -> list[int]:
    """The student's prompt tokens, after proving they hold none of the privileged context."""
    text = tokenizer.apply_chat_template(
        task.messages(), add_generation_prompt=True, tokenize=False
    )
    # the rendered template, not just the messages: a template may add text of its own
    if leak.contains(text, task.privileged_context):
        raise PrivilegedLeakError(
            f"task {task.id!r} (source {task.source!r}): the student prompt contains the "
            "privileged context; refusing to train on it"
        )
    return _ids(tokenizer(text, add_special_tokens=False))


def teacher_messages(task: Task, template: str) -> list[dict[str, str]]:
    """The student's conversation with the last user turn rewritten to show the privileged context."""
    messages = task.messages()
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    messages[last_user] = {
        "role": "user",
        "content": template.format(
            question=messages[last_user]["content"], privileged_context=task.privileged_context
        ),
    }
    return messages


def teacher_prompt_ids(tokenizer: PreTrainedTokenizerBase, task: Task, template: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        teacher_messages(task, template), add_generation_prompt=True, tokenize=False
    )
    return _ids(tokenizer(text, add_special_tokens=False))
