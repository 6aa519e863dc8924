import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import torch
from transformers import DataCollatorWithFlattening

from hf_recipes import cli
from hf_recipes.collators import LabelPaddingCollator
from hf_recipes.errors import RecipeError
from hf_recipes.generation import GenerationArguments, generate
from hf_recipes.metrics import exact_match, rouge_l
from hf_recipes.recipes import instruct
from hf_recipes.judge import judge_scores
from hf_recipes.prompts import render_prompt
from hf_recipes.recipes.instruct import InstructArguments
from tests.conftest import cli_args, needs_shared, SAMPLES, SHARED_DATA

RECORDS = SAMPLES / "instructions" / "instructions.json"
HEADER = "Below is an instruction that describes a task. Write a response that appropriately completes the request."


@pytest.fixture
def overrides(tiny_model_args):
    return {**tiny_model_args, "train_file": str(RECORDS), "num_train_epochs": 1, "max_new_tokens": 8,
            "per_device_train_batch_size": 8, "learning_rate": 1e-3}


def test_template_renders_exactly_with_and_without_input():
    task = InstructArguments()
    assert render_prompt("Name a day.", "", task) == (
        f"{HEADER}\n\n### Instruction:\nName a day.\n\n### Response:\n")
    assert render_prompt("Add the numbers.", "2 and 3", task) == (
        f"{HEADER}\n\n### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n")
    assert render_prompt("Name a day.", "  ", task) == render_prompt("Name a day.", None, task)
    custom = InstructArguments(prompt_template="Q: {instruction}{input_section}\nA: ", input_template=" ({input})")
    assert render_prompt("2+2?", "math", custom) == "Q: 2+2? (math)\nA: "


@pytest.mark.parametrize("template, message", [
    ("{instruction} only", "prompt_template must hold exactly {input_section}, {instruction}; found {instruction}"),
    ("{instruction}{input_section}{oops}", "found {input_section}, {instruction}, {oops}"),
    ("{instruction{input_section}", "prompt_template is not a valid template"),
])
def test_bad_templates_are_named(template, message):
    with pytest.raises(RecipeError, match=message.replace("{", r"\{").replace("}", r"\}")):
        InstructArguments(prompt_template=template)


def test_label_layout_of_a_real_example(overrides):
    _, prepared = instruct.build_trainer(**overrides)
    tokenizer, eos = prepared.tokenizer, prepared.tokenizer.eos_token_id
    record = prepared.raw["train"][0]
    prompt = render_prompt(record["instruction"], record["input"], InstructArguments())
    prompt_ids = tokenizer(prompt)["input_ids"]
    response_ids = tokenizer(record["output"])["input_ids"]
    example = prepared.datasets["train"][0]
    assert example["input_ids"] == prompt_ids + response_ids + [eos]
    assert example["labels"] == [-100] * len(prompt_ids) + response_ids + [eos]
    assert tokenizer.decode(example["input_ids"]) == prompt + record["output"] + tokenizer.eos_token


def test_padding_is_masked_by_position_and_the_real_eos_stays_a_target(overrides):
    _, prepared = instruct.build_trainer(**overrides)
    eos = prepared.tokenizer.eos_token_id
    assert prepared.tokenizer.pad_token_id == eos  # the case that hides the EOS when masking by id
    short, long = sorted(prepared.datasets["train"].select(range(8)), key=lambda e: len(e["input_ids"]))[::7]
    batch = LabelPaddingCollator(prepared.tokenizer)([short, long])
    n, width = len(short["input_ids"]), len(long["input_ids"])
    assert batch["input_ids"].shape == (2, width) and n < width
    assert batch["labels"][0, : n].tolist() == short["labels"] and batch["labels"][0, n - 1] == eos
    assert batch["labels"][0, n:].tolist() == [-100] * (width - n)
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (width - n)
    assert batch["position_ids"][0, :n].tolist() == list(range(n))
    assert batch["labels"][1].tolist() == long["labels"]


def response_only_loss(logits, labels):
    """Cross-entropy by hand over the positions whose next token is a response token."""
    targets = labels[:, 1:]
    keep = targets != -100
    return torch.nn.functional.cross_entropy(logits[:, :-1][keep], targets[keep])


def test_prompt_positions_cannot_change_the_loss_when_masking_is_on(overrides):
    _, prepared = instruct.build_trainer(**overrides)
    batch = LabelPaddingCollator(prepared.tokenizer)(list(prepared.datasets["train"].select(range(4))))
    model = prepared.model
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.detach()
    logits.requires_grad_(True)
    loss = model.loss_function(logits=logits, labels=batch["labels"], vocab_size=model.config.vocab_size)
    torch.testing.assert_close(loss, response_only_loss(logits, batch["labels"]))
    loss.backward()
    # a logit predicting a prompt token (or padding) has no gradient: no change there can move the loss
    predicts_prompt = batch["labels"][:, 1:] == -100
    assert logits.grad[:, :-1][predicts_prompt].abs().max() == 0
    assert logits.grad[:, :-1][~predicts_prompt].abs().max() > 0


def test_train_on_inputs_makes_prompt_tokens_targets(overrides):
    _, masked = instruct.build_trainer(**overrides)
    _, full = instruct.build_trainer(**{**overrides, "train_on_inputs": True})
    for m, f in zip(masked.datasets["train"].select(range(5)), full.datasets["train"].select(range(5))):
        assert f["input_ids"] == m["input_ids"] and f["labels"] == f["input_ids"]
        assert -100 in m["labels"] and m["labels"] != f["labels"]
    batch = [full.datasets["train"][0]]
    collate = LabelPaddingCollator(full.tokenizer)
    model = full.model
    loss_full = model(**collate(batch)).loss
    loss_masked = model(**collate([masked.datasets["train"][0]])).loss
    assert not torch.isclose(loss_full, loss_masked)


def test_padding_free_batches_give_the_padded_loss(overrides):
    trainer, prepared = instruct.build_trainer(**{**overrides, "padding_free": True})
    assert isinstance(prepared.data_collator, DataCollatorWithFlattening)
    features = list(prepared.datasets["train"].select(range(4)))
    flat = prepared.data_collator(features)
    lengths = [len(f["input_ids"]) for f in features]
    assert flat["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in flat
    assert flat["position_ids"][0].tolist() == [p for n in lengths for p in range(n)]
    model = prepared.model.eval()
    padded = LabelPaddingCollator(prepared.tokenizer)(features)
    with torch.no_grad():
        torch.testing.assert_close(model(**flat).loss, model(**padded).loss, rtol=1e-5, atol=1e-5)


def test_batched_left_padded_generation_equals_one_by_one(overrides):
    _, prepared = instruct.build_trainer(**overrides)
    records = prepared.raw["test"].select(range(6))
    prompts = [render_prompt(i, x, InstructArguments()) for i, x in zip(records["instruction"], records["input"])]
    assert len({len(prepared.tokenizer(p)["input_ids"]) for p in prompts}) > 1  # so the batch really pads
    settings = GenerationArguments(do_sample=False, max_new_tokens=12, generation_batch_size=6)
    batched = generate(prepared.model, prepared.tokenizer, prompts, settings)
    settings.generation_batch_size = 1
    assert batched == generate(prepared.model, prepared.tokenizer, prompts, settings)


def plain_greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """Greedy decoding by hand: the most likely next token, nothing else, until EOS."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(input_ids=ids).logits[0, -1].argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return tokenizer.decode(new).strip()


def test_scored_answers_are_plain_greedy_decoding(overrides):
    _, prepared = instruct.build_trainer(**{**overrides, "max_new_tokens": 16})
    task = InstructArguments(max_new_tokens=16)
    records = prepared.raw["test"].select(range(4))
    answers = instruct.RECIPE.answer(prepared, records, task)
    model = prepared.model.eval()
    assert answers == [plain_greedy(model, prepared.tokenizer, p, 16) for p in instruct.RECIPE.prompts(records, task)]
    assert task.decoding_settings() == {"do_sample": False, "max_new_tokens": 16, "repetition_penalty": 1.0}


def test_splits_are_85_5_10_disjoint_and_reproducible(overrides):
    _, first = instruct.build_trainer(**overrides)
    _, second = instruct.build_trainer(**{**overrides, "output_dir": overrides["output_dir"] + "2"})
    total = len(json.loads(RECORDS.read_text()))
    sizes = {s: len(first.raw[s]) for s in ("train", "validation", "test")}
    assert sizes == {"train": total - round(total * 0.05) - round(total * 0.1),
                     "validation": round(total * 0.05), "test": round(total * 0.1)}
    key = lambda r: (r["instruction"], r["input"], r["output"])  # noqa: E731
    rows = {s: [key(r) for r in first.raw[s]] for s in sizes}
    assert not set(rows["train"]) & set(rows["test"]) and not set(rows["train"]) & set(rows["validation"])
    assert not set(rows["validation"]) & set(rows["test"])
    assert all(rows[s] == [key(r) for r in second.raw[s]] for s in sizes)
    _, other_seed = instruct.build_trainer(**{**overrides, "seed": 7})
    assert [key(r) for r in other_seed.raw["test"]] != rows["test"]


def test_scores_equal_hand_computation():
    assert exact_match([" The  Cat ", "dog"], ["the cat", "a dog"]) == 0.5
    # LCS of "the cat sat" and "the cat" is 2 words: precision 2/3, recall 1, F1 0.8
    assert rouge_l(["the cat sat", "x"], ["the cat", "y"]) == pytest.approx((0.8 + 0.0) / 2)


@pytest.mark.slow
def test_run_writes_generations_scores_report_and_generates_again(overrides, capsys):
    metrics = instruct.run(**overrides)
    out = Path(overrides["output_dir"])
    rows = [json.loads(line) for line in (out / "test_generations.jsonl").read_text().splitlines()]
    assert len(rows) == metrics["test_samples"] == 40
    assert set(rows[0]) == {"instruction", "input", "reference", "generated"}
    generated, references = [r["generated"] for r in rows], [r["reference"] for r in rows]
    assert metrics["test_rouge_l"] == pytest.approx(rouge_l(generated, references))
    assert metrics["test_exact_match"] == pytest.approx(exact_match(generated, references))
    saved = json.loads((out / "test_results.json").read_text())
    assert saved["test_rouge_l"] == pytest.approx(metrics["test_rouge_l"])
    report = (out / "report.md").read_text()
    for heading in ("Answer scores on the test split", "Test examples: starting model and fine-tuned",
                    "Validation loss before and after fine-tuning", "LLM judge: off"):
        assert heading in report
    assert "loss_curve.png" in report and (out / "loss_curve.png").is_file()
    assert "Decoding: greedy, max_new_tokens 8, repetition_penalty 1.0; stops at EOS." in report
    decoding = json.loads((out / "recipe.json").read_text())["decoding"]
    assert decoding == {"do_sample": False, "max_new_tokens": 8, "repetition_penalty": 1.0}

    row = next(r for r in rows if r["input"])
    assert instruct.generate(out, row["instruction"], input=row["input"], max_new_tokens=8) == row["generated"]
    capsys.readouterr()
    assert cli.main(["generate", "--model_dir", str(out), "--instruction", row["instruction"],
                     "--input", row["input"], "--max_new_tokens", "8"]) == 0
    assert capsys.readouterr().out.strip() == row["generated"]
    assert cli.main(["generate", "--model_dir", str(out), "--prompt", "hello"]) == 2
    assert "give --instruction" in capsys.readouterr().err


@pytest.mark.parametrize("records, message", [
    ([{"instruction": "a", "input": ""}] * 20, "column 'output' not found in train data"),
    ([{"instruction": "a", "input": "", "output": None}] * 20, "the train split is empty after dropping rows with empty 'output'"),
    ([{"instruction": "", "input": "", "output": "b"}] * 20, "the train split is empty after dropping rows with empty 'instruction'"),
    ([{"instruction": "a", "output": "b"}] * 3, "too few to carve validation and test"),
])
def test_bad_records_are_one_clear_line(overrides, tmp_path, capsys, records, message):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    assert cli.main(["train", "instruct", *cli_args({**overrides, "train_file": path})]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err
    assert not Path(overrides["output_dir"]).exists()


def test_records_without_an_input_column_have_empty_inputs(overrides, tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Say {i}.", "output": str(i)}) + "\n" for i in range(40)))
    _, prepared = instruct.build_trainer(**{**overrides, "train_file": str(path)})
    assert set(prepared.raw["train"]["input"]) == {""}


class JudgeHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, self.headers.get("Authorization"), body))
        score = "90" if "response `Paris`" in body["messages"][0]["content"] else "Score: 40"
        reply = {"choices": [{"message": {"content": score}}]}
        self.send_response(200)
        self.end_headers()
        self.wfile.write(json.dumps(reply).encode())

    def log_message(self, *args):
        pass


def test_llm_judge_scores_through_an_openai_compatible_endpoint(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), JudgeHandler)
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("JUDGE_KEY", "secret")
    task = InstructArguments(judge_url=f"http://127.0.0.1:{server.server_port}/v1", judge_model="m",
                             judge_api_key_env="JUDGE_KEY")
    try:
        score, line = judge_scores(["p1", "p2"], ["Paris", "Paris"], ["Paris", "Lyon"], task)
    finally:
        server.shutdown()
    assert score == 65 and "mean score 65.0 / 100 over 2 of 2" in line
    path, auth, body = server.requests[0]
    assert path == "/v1/chat/completions" and auth == "Bearer secret" and body["model"] == "m"


def test_llm_judge_off_or_unreachable_is_not_an_error():
    assert judge_scores(["p"], ["r"], ["g"], InstructArguments())[0] is None
    score, line = judge_scores(["p"], ["r"], ["g"], InstructArguments(judge_url="http://127.0.0.1:9/v1"))
    assert score is None and "no score" in line


def test_url_data_without_network_is_one_clear_line(overrides, capsys):
    url = "https://example.com/instruction-data.json"
    assert cli.main(["train", "instruct", *cli_args({**overrides, "train_file": url})]) == 2
    assert "cannot reach example.com to fetch train_file" in capsys.readouterr().err


@needs_shared
def test_the_book_instruction_set_splits_935_55_110(overrides):
    _, prepared = instruct.build_trainer(**{
        **overrides, "train_file": str(SHARED_DATA / "instructions" / "instruction-data.json"),
        "tokenizer_name": str(SHARED_DATA / "gpt2_tokenizer"), "config_overrides": "n_layer=1,n_embd=32,n_head=2",
    })
    assert {s: len(prepared.raw[s]) for s in ("train", "validation", "test")} == {
        "train": 935, "validation": 55, "test": 110}
    example = prepared.datasets["train"][0]
    assert example["input_ids"][-1] == example["labels"][-1] == prepared.tokenizer.eos_token_id


def test_a_prompt_longer_than_the_context_still_gets_an_answer(overrides):
    _, prepared = instruct.build_trainer(**overrides)  # context of 128 positions
    long_input = " ".join(["word"] * 400)
    prompts = [render_prompt("Summarize the text.", long_input, InstructArguments()), "Short prompt."]
    assert len(prepared.tokenizer(prompts[0])["input_ids"]) > 128
    settings = GenerationArguments(do_sample=False, max_new_tokens=8)
    answers = generate(prepared.model, prepared.tokenizer, prompts, settings)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)  # no position beyond the context


def test_padding_free_refuses_a_cache_that_would_let_records_attend_to_each_other(overrides):
    with pytest.raises(RecipeError, match="use_cache must be off with padding_free"):
        instruct.build_trainer(**{**overrides, "padding_free": True, "use_cache": True})
    trainer, prepared = instruct.build_trainer(**{**overrides, "use_cache": True})  # padded rows: a cache is harmless
    assert trainer.args.use_cache


def test_streamed_records_train_evaluate_and_report(overrides):
    settings = {**overrides, "streaming": True, "max_steps": 3, "max_eval_samples": 6, "max_test_samples": 3,
                "report_examples": 2}
    metrics = instruct.run(**settings)
    out = Path(settings["output_dir"])
    assert metrics["train_loss"] > 0 and math.isfinite(metrics["eval_loss"])
    assert metrics["eval_samples"] == 6 and json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    found = json.loads((out / "checks.json").read_text())
    assert found["leakage"]["overlaps"]["test"]["rows"] == 3 and found["leakage"]["overlaps"]["validation"]["rows"] == 6
    records = json.loads(RECORDS.read_text())
    assert found["leakage"]["streamed_train_sample"] == len(records) - 9  # the head of the stream: all of it here
    assert f"the screen read its first {len(records) - 9} rows only" in (out / "report.md").read_text()
    # the held test split is the head of the file, answered whole
    answered = [json.loads(line) for line in (out / instruct.GENERATIONS_FILE).read_text().splitlines()]
    assert [row["instruction"] for row in answered] == [r["instruction"] for r in records[:3]]
