import pytest
from pydantic import ValidationError

from rlsd.tasks import ChatMessage, Task

SOLUTION = "Maria starts with 7 apples and buys 3 more: 7 + 3 = 10.\n#### 10"


def make(prompt_texts, privileged=SOLUTION, **kw):
    fields = dict(
        id="t-1",
        prompt=[ChatMessage(role="user", content=t) for t in prompt_texts],
        answer="10",
        privileged_context=privileged,
        verifier="math-answer",
        split="train",
        source="test",
    )
    fields.update(kw)
    return Task(**fields)


def test_valid_task_and_messages():
    t = make(["Maria has 7 apples. She buys 3 more. How many apples does she have now?"])
    assert t.messages() == [{"role": "user", "content": t.prompt[0].content}]
    assert t.images == [] and t.metadata == {}


def test_frozen():
    t = make(["q"])
    with pytest.raises(ValidationError):
        t.answer = "11"


@pytest.mark.parametrize(
    "leaky",
    [
        f"Question... Here is the solution: {SOLUTION}",
        SOLUTION.upper(),  # case does not hide it
        SOLUTION.replace(" ", "  \n "),  # nor does re-wrapping whitespace
    ],
)
def test_rejects_privileged_context_in_prompt(leaky):
    with pytest.raises(ValidationError) as err:
        make(["clean system-ish text", leaky], id="leaky-task")
    msg = str(err.value)
    assert "leaky-task" in msg and "privileged context" in msg


def test_leak_in_assistant_turn_is_rejected_too():
    with pytest.raises(ValidationError, match="privileged context"):
        Task(
            id="x",
            prompt=[
                ChatMessage(role="user", content="q"),
                ChatMessage(role="assistant", content=SOLUTION),
                ChatMessage(role="user", content="q2"),
            ],
            answer="10",
            privileged_context=SOLUTION,
            verifier="math-answer",
            split="heldout",
            source="test",
        )


def test_short_privileged_context_is_not_a_leak():
    # A bare answer such as "10" appears in many prompts; too short to call a leak.
    t = make(["There are 10 birds and 10 cats."], privileged="10")
    assert t.privileged_context == "10"
    make(["anything"], privileged="")


def test_rejects_bad_fields():
    with pytest.raises(ValidationError):
        make(["q"], split="test")
    with pytest.raises(ValidationError):
        make([], id="empty-prompt")
    with pytest.raises(ValidationError):
        ChatMessage(role="tool", content="x")
    with pytest.raises(ValidationError):
        make(["q"], unexpected_field=1)
