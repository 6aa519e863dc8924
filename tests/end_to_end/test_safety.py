"""Safety: no token on disk or in logs, safetensors only, no remote code unless asked, nothing outside output_dir."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hf_recipes import recipes
from hf_recipes import cli
from tests.conftest import cli_args, TASK_DATA

MODEL_TOKEN, HUB_TOKEN = "hf_modelTokenThatMustNotLeak", "hf_hubTokenThatMustNotLeak"


def all_files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def assert_no_secret(files: dict[Path, bytes], captured, caplog) -> None:
    for secret in (MODEL_TOKEN, HUB_TOKEN):
        for path, content in files.items():
            assert secret.encode() not in content, path
        assert secret not in captured.out + captured.err + caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sentiment", "instruct"])
def test_tokens_never_reach_a_file_or_the_log(name, tiny_model_args, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.delenv("HF_TOKEN", raising=False)  # restored after the test
    run = {**tiny_model_args, **TASK_DATA[name], "max_steps": 2, "save_strategy": "steps", "save_steps": 1,
           "token": MODEL_TOKEN, "hub_token": HUB_TOKEN, "logging_steps": 1}
    assert cli.main(["train", name, *cli_args(run)]) == 0
    files = all_files(Path(run["output_dir"]))
    assert any(p.name == "training_args.bin" for p in files)  # checkpoints included
    assert_no_secret(files, capsys.readouterr(), caplog)
    assert os.environ["HF_TOKEN"] == HUB_TOKEN  # the hub client still has it, for push_to_hub


def test_weights_are_safetensors_only(tiny_model_args, tmp_path, capsys):
    run = {**tiny_model_args, **TASK_DATA["lyrics"], "max_steps": 2, "save_strategy": "steps", "save_steps": 1}
    recipes.get("lyrics").run(**run)
    names = [p.name for p in Path(run["output_dir"]).rglob("*") if p.is_file()]
    assert names.count("model.safetensors") == 3  # the model and two checkpoints
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth")) and n not in ("training_args.bin",
                                                                                       "optimizer.pt", "scheduler.pt",
                                                                                       "rng_state.pth")]

    pickled = tmp_path / "pickled"  # a model whose weights exist only as a pickle
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=128)).save_pretrained(pickled)
    (pickled / "model.safetensors").unlink()
    torch.save({}, pickled / "pytorch_model.bin")
    code = cli.main(["train", "lyrics", *cli_args({**run, "model_name_or_path": str(pickled), "model_type": None,
                                                   "config_overrides": None, "output_dir": str(tmp_path / "o")})])
    assert code != 0
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: could not load model")
    assert cli.main(["generate", "--model_dir", str(pickled), "--prompt", "la"]) != 0
    assert "holds no safetensors weights" in capsys.readouterr().err


def custom_code_folder(folder: Path, marker: Path, with_weights: bool = True) -> Path:
    """A model folder whose config maps to its own Python file, which creates ``marker`` if it is ever run."""
    folder.mkdir()
    (folder / "custom_model.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "custom-gpt", "architectures": ["CustomModel"],
        "auto_map": {"AutoConfig": "custom_model.Config", "AutoModelForCausalLM": "custom_model.Model",
                     "AutoModelForSequenceClassification": "custom_model.Classifier"}}))
    if with_weights:
        (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_remote_code_never_runs_unless_asked(tiny_model_args, tmp_path, capsys):
    marker = tmp_path / "remote-code-ran"
    folder = custom_code_folder(tmp_path / "custom", marker, with_weights=False)
    run = {**tiny_model_args, **TASK_DATA["lyrics"], "model_name_or_path": str(folder), "model_type": None,
           "config_overrides": None}
    assert cli.main(["train", "lyrics", *cli_args(run)]) == 2
    assert "ships its own Python code" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not marker.exists() and not Path(run["output_dir"]).exists()
    assert recipes.get("lyrics").parse(**run).model.trust_remote_code is False


@pytest.mark.slow
@pytest.mark.parametrize("verb", [["predict", "sentiment", "hello"], ["generate", "--prompt", "hello"]])
def test_predict_and_generate_never_prompt_for_or_run_custom_code(verb, tmp_path):
    """transformers asks "Do you wish to run the custom code? [y/N]" and runs it on "y"; here nothing asks, and
    nothing runs, even with "y" waiting on standard input."""
    marker = tmp_path / "remote-code-ran"
    folder = custom_code_folder(tmp_path / "custom", marker)
    command = [sys.executable, "-m", "hf_recipes.cli", *verb, "--model_dir", str(folder)]
    done = subprocess.run(command, input="y\ny\n", capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {folder} ships its own Python code (config.json has auto_map), which is never run unless you pass "
        "--trust_remote_code true (read the code first)"]
    assert "custom code" not in done.stdout and not marker.exists()

    if verb[0] == "predict":
        return  # the flag is shared: generate shows that it lets the code run
    # Asked for explicitly, the folder's code is what runs (and this one is no model: one line again).
    done = subprocess.run([*command, "--trust_remote_code", "true"], input="", capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert marker.exists()


@pytest.mark.slow
def test_a_sweep_writes_no_token_anywhere(tiny_model_args, tmp_path, monkeypatch, capsys, caplog):
    pytest.importorskip("optuna")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    run = {**tiny_model_args, **TASK_DATA["sentiment"], "max_train_samples": 32, "max_test_samples": 16,
           "num_train_epochs": 1, "per_device_train_batch_size": 16, "eval_strategy": "epoch"}
    argv = ["sweep", "sentiment", "--n_trials", "1", *cli_args(run), "--token", MODEL_TOKEN,
            f"--hub_token={HUB_TOKEN}"]
    assert cli.main(argv) == 0
    files = all_files(Path(run["output_dir"]))
    assert any(p.name == "best.yaml" for p in files)
    assert_no_secret(files, capsys.readouterr(), caplog)


@pytest.mark.slow
def test_a_run_never_writes_over_files_it_did_not_create(tiny_model_args, tmp_path, capsys):
    data = tmp_path / "my-data"
    data.mkdir()
    (data / "README.md").write_text("# my notes\n")
    (data / "train.csv").write_bytes(Path(TASK_DATA["sentiment"]["train_file"]).read_bytes())
    before = all_files(data)
    run = {**tiny_model_args, **TASK_DATA["sentiment"], "max_steps": 1, "output_dir": str(data)}
    assert cli.main(["train", "sentiment", *cli_args(run)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (f"error: output_dir {data} holds files no hf-recipes run wrote (README.md, train.csv); choose a "
                    "new or empty --output_dir, or pass --overwrite_output_dir true to write over them")
    assert all_files(data) == before

    # The demo config cannot do it either; only an explicit --overwrite_output_dir true can.
    demo = ["train", "sentiment", "--config", str(recipes.demo_config("sentiment")), "--output_dir", str(data)]
    assert cli.main(demo) == 2 and all_files(data) == before
    assert cli.main(["train", "sentiment", *cli_args({**run, "overwrite_output_dir": True})]) == 0
    assert (data / "README.md").read_text() != "# my notes\n"

    # A folder of our own is resumed into or refused as a finished run, never mistaken for the user's.
    mine = {**run, "output_dir": str(tmp_path / "mine")}
    assert cli.main(["train", "sentiment", *cli_args(mine)]) == 0
    assert cli.main(["train", "sentiment", *cli_args(mine)]) == 2
    assert "already holds a finished run" in capsys.readouterr().err.strip().splitlines()[-1]
    assert cli.main(["train", "lyrics", *cli_args({**tiny_model_args, **TASK_DATA["lyrics"], "max_steps": 1,
                                                     "output_dir": mine["output_dir"]})]) == 2
    assert "holds a sentiment run, not a lyrics one" in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_run_writes_nothing_outside_output_dir(tiny_model_args, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "songs.txt").write_text(Path(TASK_DATA["lyrics"]["train_file"]).read_text())
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    run = {**tiny_model_args, **TASK_DATA["lyrics"], "train_file": str(data / "songs.txt"), "max_steps": 2,
           "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache")}
    before = set(tmp_path.rglob("*"))
    recipes.get("lyrics").run(**run)
    outside = {p for p in set(tmp_path.rglob("*")) - before
               if not p.is_relative_to(tmp_path / "out") and not p.is_relative_to(tmp_path / "cache")}
    assert outside == set()
