"""Safety: no token on disk or in logs, safetensors only, no remote code unless asked, nothing outside output_dir."""

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import recipes
from hf_recipes import cli
from tests.conftest import cli_args
from tests.test_reliability import TASK_DATA

MODEL_TOKEN, HUB_TOKEN = "hf_modelTokenThatMustNotLeak", "hf_hubTokenThatMustNotLeak"


def all_files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", ["sentiment", "instruct"])
def test_tokens_never_reach_a_file_or_the_log(name, tiny_model_args, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.delenv("HF_TOKEN", raising=False)  # restored after the test
    run = {**tiny_model_args, **TASK_DATA[name], "max_steps": 2, "save_strategy": "steps", "save_steps": 1,
           "token": MODEL_TOKEN, "hub_token": HUB_TOKEN, "logging_steps": 1}
    assert cli.main(["train", name, *cli_args(run)]) == 0
    files = all_files(Path(run["output_dir"]))
    assert any(p.name == "training_args.bin" for p in files)  # checkpoints included
    for path, content in files.items():
        for secret in (MODEL_TOKEN, HUB_TOKEN):
            assert secret.encode() not in content, path
    captured = capsys.readouterr()
    for secret in (MODEL_TOKEN, HUB_TOKEN):
        assert secret not in captured.out + captured.err + caplog.text
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


def test_remote_code_never_runs_unless_asked(tiny_model_args, tmp_path, capsys):
    folder = tmp_path / "custom"
    folder.mkdir()
    marker = tmp_path / "remote-code-ran"
    (folder / "custom_model.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "custom-gpt", "auto_map": {"AutoConfig": "custom_model.Config",
                                                  "AutoModelForCausalLM": "custom_model.Model"}}))
    run = {**tiny_model_args, **TASK_DATA["lyrics"], "model_name_or_path": str(folder), "model_type": None,
           "config_overrides": None}
    assert cli.main(["train", "lyrics", *cli_args(run)]) != 0
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")
    assert not marker.exists()
    assert recipes.get("lyrics").parse(**run).model.trust_remote_code is False


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
