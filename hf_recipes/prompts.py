"""Prompt templates: an instruction (and optional input) rendered as a prompt, and the same format as a Jinja chat
template saved with the tokenizer. ``task`` is any object with ``prompt_template`` and ``input_template``."""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, fields

from hf_recipes.chat import generation_prompt
from hf_recipes.errors import RecipeError

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


@dataclass
class PromptFormat:
    """How a trained model is prompted, saved in its recipe.json (``prompt_format``) so that ``hf-recipes
    generate`` prompts it as it was trained without the recipe's code."""

    asks_for: str = "prompt"  # "prompt": each --prompt (or --instruction) is one prompt; "instruction": --instruction
    template: str = "{prompt}"  # "{prompt}", or one with {instruction} and {input_section}
    input_template: str = ""  # the input section ({input}), left out for an empty input
    chat: bool = False  # the tokenizer's chat template renders one user turn (and writes its own BOS)
    strip: bool = False  # surrounding spaces of a prompt are dropped (a title, say)
    missing: str = "give --prompt"  # the error when no prompt is given
    echo: bool = True  # the output shows the prompt before the text the model wrote (a continuation), or not (an answer)

    @classmethod
    def of(cls, saved: dict | None) -> PromptFormat:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (saved or {}).items() if k in known})

    @classmethod
    def alpaca(cls) -> PromptFormat:
        return cls(asks_for="instruction", template=ALPACA_PROMPT, input_template=ALPACA_INPUT, echo=False,
                   missing="give --instruction (and --input when the task has one)")

    @property
    def add_bos(self) -> bool:
        return not self.chat

    def prompts(self, given: list[str], instruction: str | None, input: str, tokenizer=None) -> list[str]:
        """The model's prompts for what was given: ``given`` prompts, or an instruction and its input."""
        if self.asks_for == "prompt":
            texts = list(given or []) + ([instruction] if instruction else [])
            if not texts:
                raise RecipeError(self.missing)
            return [self.template.format(prompt=t.strip() if self.strip else t) for t in texts]
        if not instruction:
            raise RecipeError(self.missing)
        if self.chat:
            return [generation_prompt(tokenizer, [{"role": "user", "content": user_message(instruction, input)}])]
        section = self.input_template.format(input=input) if input and input.strip() else ""
        return [self.template.format(instruction=instruction, input_section=section)]
