"""Tasks -> what the rollout engine and the forward passes take, for text and vision-language
policies alike.

A text policy's prompt is a list of token ids. A vision-language policy's prompt is the dict of
:func:`rlsd.models.vlm.encode_mm_prompt` (``input_ids`` plus the vision tensors); the task's
images are resolved from content-addressed stores and attached to the last user turn. The
student and the self-teacher see the same images; the teacher's prompt adds the privileged text
(or, for a null-context teacher, the template with the context slot left empty).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from rlsd.models import LoadedPolicy
from rlsd.tasks import leak
from rlsd.tasks.record import Task
from rlsd.train.batch import (
    PrivilegedLeakError,
    TeacherContext,
    check_null_teacher_text,
    student_prompt_ids,
    teacher_messages,
    teacher_prompt_ids,
)
from rlsd.train.forward import response_hidden_plain, response_hidden_shared_prefix

Prompt = list[int] | dict[str, Any]

#: One prompt a teacher pass reads: the template with the privileged context, the template with
#: the context removed, or the student's own prompt.
TeacherView = Literal["privileged", "none", "student"]


class PromptEncoder:
    def __init__(self, policy: LoadedPolicy, image_stores: list[Any] | None = None) -> None:
        from rlsd.models.vlm import LoadedVLM

        self.policy = policy
        self.multimodal = isinstance(policy, LoadedVLM)
        self.image_stores = list(image_stores or [])

    def _images(self, task: Task) -> list[Any]:
        from rlsd.tasks.images import default_image_store, resolve_image

        stores = self.image_stores or [default_image_store()]
        return [resolve_image(ref, stores) for ref in task.images]

    def _mm(self, task: Task, messages: list[dict[str, str]]) -> dict[str, Any]:
        from rlsd.models.vlm import encode_mm_prompt

        enc = encode_mm_prompt(self.policy, messages, self._images(task))
        dtype = next(self.policy.model.parameters()).dtype
        for k, v in enc.items():  # a bf16 vision tower takes bf16 pixels
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                enc[k] = v.to(dtype)
        return enc

    def student(self, task: Task) -> Prompt:
        if not self.multimodal:
            if task.images:
                raise ValueError(
                    f"task {task.id!r} has {len(task.images)} image(s) but the policy "
                    f"{self.policy.source} is a text model: use a vision-language model"
                )
            return student_prompt_ids(self.policy.tokenizer, task)
        from rlsd.models.vlm import mm_prompt_text

        text = mm_prompt_text(self.policy, task.messages(), len(task.images))
        if leak.contains(text, task.privileged_context):
            raise PrivilegedLeakError(
                f"task {task.id!r}: the student prompt contains the privileged context"
            )
        return self._mm(task, task.messages())

    def teacher(self, task: Task, template: str, context: TeacherContext = "privileged") -> Prompt:
        if not self.multimodal:
            return teacher_prompt_ids(self.policy.tokenizer, task, template, context)
        messages = teacher_messages(task, template, context)
        if context == "none":
            from rlsd.models.vlm import mm_prompt_text

            check_null_teacher_text(task, mm_prompt_text(self.policy, messages, len(task.images)))
        return self._mm(task, messages)

    def view(self, task: Task, view: TeacherView, template: str) -> Prompt:
        """The prompt of one teacher view (see :data:`TeacherView`)."""
        if view == "student":
            return self.student(task)
        return self.teacher(task, template, view)

    @staticmethod
    def ids(prompt: Prompt) -> list[int]:
        return list(prompt["input_ids"]) if isinstance(prompt, dict) else list(prompt)


def hidden_shared_prefix(
    model: torch.nn.Module, prompts: list[Prompt], responses: list[list[int]], G: int, pad_id: int
) -> torch.Tensor:
    if prompts and isinstance(prompts[0], dict):
        from rlsd.train.forward_mm import response_hidden_shared_prefix_mm

        return response_hidden_shared_prefix_mm(model, prompts, responses, G, pad_id)
    return response_hidden_shared_prefix(model, prompts, responses, G, pad_id)


def hidden_plain(
    model: torch.nn.Module, prompts_per_seq: list[Prompt], responses: list[list[int]], pad_id: int
) -> torch.Tensor:
    if prompts_per_seq and isinstance(prompts_per_seq[0], dict):
        from rlsd.train.forward_mm import response_hidden_plain_mm

        return response_hidden_plain_mm(model, prompts_per_seq, responses, pad_id)
    return response_hidden_plain(model, prompts_per_seq, responses, pad_id)
