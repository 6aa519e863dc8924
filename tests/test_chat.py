"""prompt_format chat: conversations rendered by the tokenizer's chat template (ChatML by default), the loss on the
assistant turns only, and inference prompted the same way."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from tokenizers.processors import TemplateProcessing
from transformers import (AutoConfig, AutoTokenizer, DataCollatorWithFlattening, GPT2Config, GPT2LMHeadModel,
                          pipeline)

from hf_recipes import cli
from hf_recipes.chat import CHATML_TEMPLATE, IM_END, chat_examples, use_chat_template
from hf_recipes.collators import LabelPaddingCollator
from hf_recipes.config import ModelArguments
from hf_recipes.errors import RecipeError
from hf_recipes.model import load_tokenizer
from hf_recipes.recipes import instruct
from hf_recipes.recipes.instruct import InstructArguments, conversations
from tests.conftest import expected_chatml, ids_of, SAMPLES, tiny_overrides, TOKENIZER_DIR

TWO_TURNS = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name a day."},
    {"role": "assistant", "content": "Sunday."},
    {"role": "user", "content": "Another?"},
    {"role": "assistant", "content": "Monday."},
]
UNANSWERED = [  # dropped and counted: no assistant turn, an empty last answer, no messages at all
    [{"role": "user", "content": "Hello?"}],
    [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hi."},
     {"role": "user", "content": "And?"}, {"role": "assistant", "content": "  "}],
    None,
]
LLAMA_LIKE = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
              "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")




def chatml_tokenizer():
    tokenizer = load_tokenizer(ModelArguments(tokenizer_name=str(TOKENIZER_DIR)))
    assert use_chat_template(tokenizer)
    return tokenizer




def write_conversations(path: Path) -> Path:
    """The bundled instruction sample as conversations (a system turn, every third record a second exchange), the
    two-turn conversation above, and the unanswered ones."""
    records = json.loads((SAMPLES / "instructions" / "instructions.json").read_text())
    rows = [TWO_TURNS, *UNANSWERED]
    for i, record in enumerate(records):
        messages = [{"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": instruct.user_message(record["instruction"], record["input"])},
                    {"role": "assistant", "content": record["output"]}]
        if i % 3 == 0:
            messages += [{"role": "user", "content": "Once more."}, {"role": "assistant", "content": record["output"]}]
        rows.append(messages)
    path.write_text("".join(json.dumps({"messages": messages}) + "\n" for messages in rows))
    return path


@pytest.fixture
def chat_overrides(tmp_path):
    return {**tiny_overrides(tmp_path / "run"), "train_file": str(write_conversations(tmp_path / "chat.jsonl")),
            "prompt_format": "chat", "messages_column": "messages", "max_new_tokens": 8, "max_steps": 4,
            "per_device_train_batch_size": 8, "learning_rate": 1e-3}


def find(prepared, first_content: str):
    """The split and index of the record whose first message is ``first_content``."""
    for split, raw in prepared.raw.items():
        for index, messages in enumerate(raw["messages"]):
            if messages[0]["content"] == first_content:
                return split, index
    raise AssertionError(first_content)


def test_chatml_ids_and_labels_of_a_two_turn_conversation_are_exact():
    tokenizer = chatml_tokenizer()
    ids, labels = expected_chatml(tokenizer, TWO_TURNS)
    # the pieces above, checked against the layout written out in full
    assert tokenizer.decode(ids) == ("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nName a day."
                                     "<|im_end|>\n<|im_start|>assistant\nSunday.<|im_end|>\n<|im_start|>user\n"
                                     "Another?<|im_end|>\n<|im_start|>assistant\nMonday.<|im_end|>\n")
    assert tokenizer.decode([t for t in labels if t != -100]) == "Sunday.<|im_end|>Monday.<|im_end|>"
    assert chat_examples(tokenizer, [TWO_TURNS], train_on_inputs=False) == [(ids, labels)]
    assert chat_examples(tokenizer, [TWO_TURNS], train_on_inputs=True) == [(ids, ids)]
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == "<|endoftext|>"  # pad is masked by position


def test_the_recipe_trains_on_the_assistant_turns_and_drops_unanswered_records(chat_overrides):
    trainer, prepared = instruct.build_trainer(**{**chat_overrides, "padding_free": True})
    tokenizer = prepared.tokenizer
    assert tokenizer.chat_template == CHATML_TEMPLATE
    # a fresh model's vocabulary holds the added markers; config and generation config stop at <|im_end|>
    end = tokenizer.convert_tokens_to_ids(IM_END)
    assert prepared.model.get_input_embeddings().weight.shape[0] == len(tokenizer) == 2050
    assert prepared.model.config.eos_token_id == prepared.model.generation_config.eos_token_id == end
    split, index = find(prepared, "You are terse.")
    example = prepared.datasets[split][index]
    assert (example["input_ids"], example["labels"]) == expected_chatml(tokenizer, TWO_TURNS)
    dropped = prepared.facts["records dropped (no assistant answer)"]  # "train 2, validation 0, test 1"
    assert sum(int(part.split()[1]) for part in dropped.split(", ")) == len(UNANSWERED)
    samples = len(json.loads((SAMPLES / "instructions" / "instructions.json").read_text()))
    assert sum(len(raw) for raw in prepared.raw.values()) == 1 + samples
    # padding-free batches of conversations give the padded loss
    assert isinstance(prepared.data_collator, DataCollatorWithFlattening)
    features = list(prepared.datasets["train"].select(range(4)))
    model = prepared.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**prepared.data_collator(features)).loss,
                                   model(**LabelPaddingCollator(tokenizer)(features)).loss, rtol=1e-5, atol=1e-5)


def test_conversations_are_cut_at_max_length_and_dropped_when_the_prompt_fills_it(chat_overrides):
    limit = 40
    _, prepared = instruct.build_trainer(**{**chat_overrides, "max_seq_length": limit})
    split, _ = find(prepared, "You are terse.")
    ids, labels = expected_chatml(prepared.tokenizer, TWO_TURNS)
    first_target = next(i for i, label in enumerate(labels) if label != -100)
    assert first_target < limit < len(ids)  # cut after its first answer starts: kept
    rows = prepared.datasets[split]
    assert (ids[:limit], labels[:limit]) in list(zip(rows["input_ids"], rows["labels"]))
    facts = prepared.facts  # "train 3, validation 0, test 1"; the cut count after "40 tokens: "
    cut, dropped = (sum(int(part.split()[-1]) for part in facts[fact].split(", "))
                    for fact in ("records cut at max length", "records dropped (prompt fills max length)"))
    kept = sum(len(data) for data in prepared.datasets.values())
    assert dropped == sum(len(raw) for raw in prepared.raw.values()) - kept > 0 and cut > dropped
    assert all(len(e["input_ids"]) <= limit and any(t != -100 for t in e["labels"][1:])
               for data in prepared.datasets.values() for e in data)


def test_an_instruction_record_renders_as_a_user_and_an_assistant_turn(tiny_model_args):
    _, prepared = instruct.build_trainer(**tiny_model_args, train_file=str(SAMPLES / "instructions" / "instructions.json"),
                                         prompt_format="chat")
    index = next(i for i, x in enumerate(prepared.raw["train"]["input"]) if x)
    record = prepared.raw["train"][index]
    messages = conversations(prepared.raw["train"].select([index]), InstructArguments(prompt_format="chat"))[0]
    assert messages == [{"role": "user", "content": f"{record['instruction']}\n\n{record['input']}"},
                        {"role": "assistant", "content": record["output"]}]
    example = prepared.datasets["train"][index]
    assert (example["input_ids"], example["labels"]) == expected_chatml(prepared.tokenizer, messages)
    assert "records dropped (no instruction or no output)" in prepared.facts


@pytest.mark.slow
def test_a_chat_run_answers_alike_in_its_report_generate_the_cli_and_a_plain_pipeline(chat_overrides, capsys):
    instruct.run(**chat_overrides)
    out = Path(chat_overrides["output_dir"])
    assert json.loads((out / "recipe.json").read_text())["task"]["prompt_format"] == "chat"
    config, tokenizer = AutoConfig.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == CHATML_TEMPLATE and tokenizer.eos_token == IM_END
    saved_generation = json.loads((out / "generation_config.json").read_text())
    assert config.eos_token_id == saved_generation["eos_token_id"] == tokenizer.convert_tokens_to_ids(IM_END)

    rows = [json.loads(line) for line in (out / "test_generations.jsonl").read_text().splitlines()]
    row = next(r for r in rows if len(r["messages"]) == 4)  # a second exchange: prompted up to its last answer
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant", "user"]
    assert row["messages"][-1]["content"] == "Once more." and row["reference"] == row["messages"][2]["content"]
    assert instruct.generate(out, messages=row["messages"]) == row["generated"]

    generator = pipeline("text-generation", model=str(out), device="cpu")
    reply = generator(row["messages"])[0]["generated_text"][-1]
    assert reply["role"] == "assistant" and reply["content"].strip() == row["generated"]
    single = [{"role": "user", "content": "Add the numbers.\n\n2 and 3"}]
    answer = instruct.generate(out, "Add the numbers.", input="2 and 3")
    assert generator(single)[0]["generated_text"][-1]["content"].strip() == answer
    capsys.readouterr()
    assert cli.main(["generate", "--model_dir", str(out), "--instruction", "Add the numbers.", "--input", "2 and 3"]) == 0
    assert capsys.readouterr().out.strip() == answer


def llama_like_tokenizer(folder: Path) -> Path:
    """The bundled tokenizer with Llama-3-like markers, a BOS it adds to every text, and its own chat template
    that writes {{ bos_token }} too."""
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    tokenizer.add_special_tokens({"bos_token": "<|begin_of_text|>",
                                  "extra_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    tokenizer.eos_token = "<|eot_id|>"
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", tokenizer.bos_token_id)])
    tokenizer.chat_template = LLAMA_LIKE
    tokenizer.save_pretrained(folder)
    return folder


def test_a_tokenizers_own_template_is_kept_with_one_bos_and_exact_labels(chat_overrides, tmp_path, monkeypatch):
    folder = llama_like_tokenizer(tmp_path / "llama-like")
    _, prepared = instruct.build_trainer(**{**chat_overrides, "tokenizer_name": str(folder)})
    tokenizer = prepared.tokenizer
    bos, head, tail, eot = tokenizer.convert_tokens_to_ids(
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])
    assert ids_of(tokenizer, "a") != tokenizer("a")["input_ids"] == [bos] + ids_of(tokenizer, "a")  # it adds BOS
    assert tokenizer.chat_template == LLAMA_LIKE and tokenizer.eos_token_id == eot
    ids, labels = [bos], [-100]
    for message in TWO_TURNS:
        turn_head = [head] + ids_of(tokenizer, message["role"]) + [tail] + ids_of(tokenizer, "\n") * 2
        content = ids_of(tokenizer, message["content"]) + [eot]
        ids += turn_head + content
        labels += [-100] * len(turn_head) + (content if message["role"] == "assistant" else [-100] * len(content))
    split, index = find(prepared, "You are terse.")
    example = prepared.datasets[split][index]
    assert (example["input_ids"], example["labels"]) == (ids, labels)
    assert tokenizer.decode([t for t in labels if t != -100]) == "Sunday.<|eot_id|>Monday.<|eot_id|>"

    # generation prompts hold the template's BOS only: in the run's answers, generate() and the CLI
    prompts = []
    original = GPT2LMHeadModel.generate

    def spy(self, **batch):
        prompts.append(batch["input_ids"].tolist()[0])
        return original(self, **batch)

    monkeypatch.setattr(GPT2LMHeadModel, "generate", spy)
    task = InstructArguments(prompt_format="chat", messages_column="messages", max_new_tokens=1, do_sample=False)
    instruct.RECIPE.answer(prepared, prepared.raw[split].select([index]), task)
    assert prompts == [ids[: len(ids) - len(ids_of(tokenizer, "Monday.")) - 1]]  # up to the last answer's start
    saved = tmp_path / "saved"
    prepared.model.save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    (saved / "recipe.json").write_text(json.dumps({"recipe": "instruct", "task": dataclasses.asdict(task)}))
    instruct.generate(saved, "Name a day.")
    assert cli.main(["generate", "--model_dir", str(saved), "--instruction", "Name a day."]) == 0
    one_turn = [bos, head, *ids_of(tokenizer, "user"), tail, *ids_of(tokenizer, "\n\nName a day."), eot, head,
                *ids_of(tokenizer, "assistant"), tail, *ids_of(tokenizer, "\n\n")]
    assert prompts[1:] == [one_turn, one_turn]


def test_a_template_that_does_not_render_turn_by_turn_is_one_clear_error():
    tokenizer = chatml_tokenizer()
    # the generation prompt says "Assistant: " but an answered turn is written "A: ..."
    tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'assistant' %}A: {{ m['content'] }}\n"
                               "{% else %}{{ m['content'] }}\n{% endif %}{% endfor %}"
                               "{% if add_generation_prompt %}Assistant: {% endif %}")
    with pytest.raises(RecipeError, match="does not render conversations turn by turn: the prompt before assistant "
                                          "turn 3"):
        chat_examples(tokenizer, [TWO_TURNS], train_on_inputs=False)


def test_generate_refuses_messages_for_an_alpaca_run_and_bad_messages(tmp_path):
    alpaca = tmp_path / "alpaca"
    alpaca.mkdir()
    (alpaca / "recipe.json").write_text(json.dumps({"recipe": "instruct", "task": {"prompt_format": "alpaca"}}))
    with pytest.raises(RecipeError, match="messages= needs a run trained with prompt_format chat"):
        instruct.generate(alpaca, messages=[{"role": "user", "content": "hi"}])
    chat = tmp_path / "chat"
    chat.mkdir()
    (chat / "recipe.json").write_text(json.dumps({"recipe": "instruct", "task": {"prompt_format": "chat"}}))
    with pytest.raises(RecipeError, match="has message 1 with role 'bot'"):
        instruct.generate(chat, messages=[{"role": "bot", "content": "hi"}])
    with pytest.raises(RecipeError, match="messages_column needs prompt_format chat"):
        InstructArguments(messages_column="messages", prompt_format="alpaca")


def test_a_pretrained_model_learns_the_chatml_markers_and_stops_at_im_end(chat_overrides, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    folder = tmp_path / "pretrained"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=128, vocab_size=len(tokenizer),
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
                    ).save_pretrained(folder)
    _, prepared = instruct.build_trainer(**{**chat_overrides, "model_type": None, "config_overrides": None,
                                            "model_name_or_path": str(folder)})
    end = prepared.tokenizer.convert_tokens_to_ids(IM_END)
    assert prepared.model.get_input_embeddings().weight.shape[0] == len(tokenizer) + 2 == len(prepared.tokenizer)
    assert prepared.model.config.eos_token_id == prepared.model.generation_config.eos_token_id == end
    assert prepared.model.config.pad_token_id == prepared.tokenizer.pad_token_id == tokenizer.eos_token_id
