"""Prompt templates: an instruction (and optional input) rendered as a prompt, and the same format as a Jinja chat
template saved with the tokenizer. ``task`` is any object with ``prompt_template`` and ``input_template``."""

from __future__ import annotations

import json
import string

# The Alpaca prompt as in "Build a Large Language Model (From Scratch)", chapter 7. The response follows it.
ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{instruction}{input_section}\n\n### Response:\n"
)
ALPACA_INPUT = "\n\n### Input:\n{input}"


def render_prompt(instruction: str, input: str | None, task) -> str:
    """The prompt for one record; the input section is left out when the input is empty."""
    section = task.input_template.format(input=input) if input and input.strip() else ""
    return task.prompt_template.format(instruction=instruction, input_section=section)


def chat_template(task) -> str:
    """The prompt format as a Jinja chat template, saved with the tokenizer: a user message (its ``content`` the
    instruction, an optional ``input`` key the input) renders exactly as :func:`render_prompt`, an assistant message
    as the response and EOS. So ``pipeline("text-generation")`` given messages prompts the model as it was trained.
    Literal text goes in as string expressions: block tags would let Jinja's trim_blocks eat its newlines."""

    def render(template: str, fields: dict[str, str]) -> str:
        parts = []
        for literal, name, _, _ in string.Formatter().parse(template):
            parts += [f"{{{{ {json.dumps(literal)} }}}}"] if literal else []
            parts += [fields[name]] if name is not None else []
        return "".join(parts)

    section = ("{% if message['input'] is defined and message['input'] %}"
               + render(task.input_template, {"input": "{{ message['input'] }}"}) + "{% endif %}")
    user = render(task.prompt_template, {"instruction": "{{ message['content'] }}", "input_section": section})
    return ("{% for message in messages %}{% if message['role'] == 'user' %}" + user
            + "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}{% endif %}"
            "{% endfor %}")


def user_message(instruction: str | None, input: str | None) -> str:
    """The user turn of an instruction/input record: the instruction, then a blank line and the input if any."""
    return (instruction or "") + (f"\n\n{input}" if input and input.strip() else "")
