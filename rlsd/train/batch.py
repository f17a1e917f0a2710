"""Building a step's batch: which tasks, their student and teacher prompts, and the leak check."""

from __future__ import annotations

import random
from typing import Literal

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


#: What fills a teacher template's ``{privileged_context}`` (``teacher.context``).
TeacherContext = Literal["privileged", "none"]


def teacher_messages(
    task: Task, template: str, context: TeacherContext = "privileged"
) -> list[dict[str, str]]:
    """The student's conversation with the last user turn rewritten into the teacher template.

    ``context="privileged"`` shows the task's privileged context; ``"none"`` fills the slot
    with the empty string, so the prompt differs from the privileged one by exactly that text
    (the null teacher of RLSD-null and rlsd-contrast).
    """
    messages = task.messages()
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    shown = task.privileged_context if context == "privileged" else ""
    messages[last_user] = {
        "role": "user",
        "content": template.format(
            question=messages[last_user]["content"], privileged_context=shown
        ),
    }
    return messages


def check_null_teacher_text(task: Task, text: str) -> None:
    """A null-context teacher prompt must hold none of the privileged context, or the null arm
    would not be measuring what it claims to (the same check as the student prompt's)."""
    if leak.contains(text, task.privileged_context):
        raise PrivilegedLeakError(
            f"task {task.id!r} (source {task.source!r}): the null-context teacher prompt "
            "contains the privileged context (through the question or the template)"
        )


def teacher_prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    template: str,
    context: TeacherContext = "privileged",
) -> list[int]:
    text = tokenizer.apply_chat_template(
        teacher_messages(task, template, context), add_generation_prompt=True, tokenize=False
    )
    if context == "none":
        check_null_teacher_text(task, text)
    return _ids(tokenizer(text, add_special_tokens=False))
