"""The task record every generator produces and every verifier consumes.

A :class:`Task` carries two views of one problem:

* ``prompt`` -- the chat messages the *student* (the policy being trained) sees;
* ``privileged_context`` -- the reference / worked solution that only the *self-teacher*
  sees when it scores the student's tokens.

The student prompt must never contain the privileged context: that is the property that
separates RLSD from OPSD (see ``docs/rlsd-method.md``), so the model validator enforces it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlsd.tasks.leak import contains as leaks_privileged


class ChatMessage(BaseModel):
    """One chat turn, in the shape tokenizer chat templates expect."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class Task(BaseModel):
    """One verifiable problem: the student prompt, the gold answer and the teacher's hint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, description="Stable id, derived from the problem content.")
    prompt: list[ChatMessage] = Field(
        min_length=1, description="Chat messages shown to the student (never the privileged text)."
    )
    answer: str = Field(description="Gold final answer, parsed by the task's verifier.")
    privileged_context: str = Field(
        description="Reference / worked solution only the self-teacher sees."
    )
    verifier: str = Field(min_length=1, description="Verifier name, e.g. 'math-answer'.")
    images: list[str] = Field(
        default_factory=list, description="Image paths or content digests (multimodal tasks)."
    )
    split: Literal["train", "heldout"]
    source: str = Field(description="Provenance, e.g. 'generator:arithmetic:v1 seed=0 ...'.")
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _student_prompt_has_no_privileged_context(self) -> Task:
        for i, message in enumerate(self.prompt):
            if leaks_privileged(message.content, self.privileged_context):
                raise ValueError(
                    f"task {self.id!r}: the student prompt (message {i}, role "
                    f"{message.role!r}) contains the privileged context; the student must "
                    "never see the reference solution (RLSD, not OPSD)"
                )
        return self

    def messages(self) -> list[dict[str, str]]:
        """The student prompt as plain dicts, ready for ``tokenizer.apply_chat_template``."""
        return [{"role": m.role, "content": m.content} for m in self.prompt]
