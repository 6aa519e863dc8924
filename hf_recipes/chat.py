"""Conversations as training examples: OpenAI-style message lists rendered by the tokenizer's chat template (ChatML
when it has none), with the loss on the assistant turns only.

The assistant spans come from the template itself, not from knowing its markers: the conversation up to an
assistant turn, rendered with the generation prompt, must be the start of the conversation rendered through that
turn; the characters in between are the turn (its content and the end-of-turn text the template writes after it).
"""

from __future__ import annotations

from typing import Sequence

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from hf_recipes.errors import RecipeError, one_line

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
# ChatML: each turn is <|im_start|>role\ncontent<|im_end|>\n; the generation prompt opens an assistant turn.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

Message = dict[str, str]


def use_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Keep a tokenizer's own chat template; give one without a template ChatML, with ``<|im_start|>`` and
    ``<|im_end|>`` as special tokens (added when missing) and ``<|im_end|>`` as EOS, so generation stops at the end
    of the assistant's turn. Call before the model is loaded: it grows the vocabulary. Returns whether ChatML was
    set."""
    if tokenizer.chat_template:
        return False
    tokenizer.add_special_tokens({"extra_special_tokens": [IM_START, IM_END]}, replace_extra_special_tokens=False)
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.eos_token = IM_END
    return True


def render(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], add_generation_prompt: bool = False
           ) -> str:
    try:
        return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except TemplateError as err:
        raise RecipeError(f"the tokenizer's chat template cannot render a conversation: {one_line(err)}") from None


def answer_spans(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], first_target: int = 0
                 ) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of each assistant turn in it from message
    ``first_target`` on (earlier ones are the prompt): from the end of the generation prompt before the turn to the
    end of what the template renders for the turn, less trailing whitespace (ChatML's newline after ``<|im_end|>``
    is not a target: generation stops at ``<|im_end|>`` and the next prompt renders the newline)."""
    text = render(tokenizer, messages)
    spans = []
    for turn, message in enumerate(messages):
        if message["role"] != "assistant" or turn < first_target:
            continue
        before = render(tokenizer, messages[:turn], add_generation_prompt=True)
        through = render(tokenizer, messages[: turn + 1])
        if not (through.startswith(before) and text.startswith(through)):
            raise RecipeError(
                "the tokenizer's chat template does not render conversations turn by turn: the prompt before "
                f"assistant turn {turn + 1} ({before[-40:]!r}) is not the start of the conversation rendered through "
                "that turn, so the assistant's tokens cannot be told apart; use a template that renders each turn "
                "after the previous ones (or a tokenizer without one, for ChatML)")
        start = len(before)
        spans.append((start, max(start, len(through.rstrip()))))
    return text, spans


def chat_examples(tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Sequence[Message]],
                  train_on_inputs: bool, first_targets: Sequence[int] | None = None
                  ) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) of each conversation, whole (not cut to a length): the rendered text tokenized without
    special tokens (the template writes its own BOS). A token is a target when its characters overlap an assistant
    span from the conversation's ``first_targets`` message on (every token with ``train_on_inputs``)."""
    if not tokenizer.is_fast:
        raise RecipeError("prompt_format chat needs a fast tokenizer (one with tokenizer.json): it maps the "
                          "assistant turns to tokens through character offsets")
    firsts = first_targets or [0] * len(conversations)
    rendered = [answer_spans(tokenizer, messages, first) for messages, first in zip(conversations, firsts)]
    encoded = tokenizer([text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
    examples = []
    for ids, offsets, (_, spans) in zip(encoded["input_ids"], encoded["offset_mapping"], rendered):
        if train_on_inputs:
            examples.append((ids, list(ids)))
            continue
        labels = [token if any(s < end and e > start for start, end in spans) else -100
                  for token, (s, e) in zip(ids, offsets)]
        examples.append((ids, labels))
    return examples


def answered(messages: Sequence[dict] | None) -> bool:
    """The conversation has an assistant turn, and the last one says something."""
    answers = [m for m in messages or [] if m.get("role") == "assistant"]
    return bool(answers) and (answers[-1].get("content") or "").strip() != ""


def split_last_answer(messages: Sequence[Message]) -> tuple[list[Message], str]:
    """The conversation up to its last assistant turn (the prompt) and that turn's content (the reference)."""
    last = max(i for i, message in enumerate(messages) if message["role"] == "assistant")
    return list(messages[:last]), messages[last]["content"]


def generation_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]) -> str:
    """The text the model continues: the conversation and the template's opening of an assistant turn."""
    return render(tokenizer, messages, add_generation_prompt=True)


def transcript(messages: Sequence[Message]) -> str:
    """``role: content`` per turn, for reports and the LLM judge."""
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


# ShareGPT speakers ("from") as message roles.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def is_sharegpt(conversations: Sequence) -> bool:
    """The first conversation's first turn is ShareGPT's ``{from, value}``."""
    first = next((c for c in conversations if c), None)
    return bool(first) and isinstance(first[0], dict) and "from" in first[0] and "value" in first[0]


def from_sharegpt(conversation):
    """ShareGPT turns as ``{role, content}`` messages (human -> user, gpt -> assistant); an unknown speaker keeps
    its name, for the message check to name it. Anything not a list of turns is left for that check too."""
    if not isinstance(conversation, list):
        return conversation
    return [{"role": SHAREGPT_ROLES.get(turn["from"], turn["from"]), "content": turn.get("value")}
            if isinstance(turn, dict) and "from" in turn else turn for turn in conversation]
