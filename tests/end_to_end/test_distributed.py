"""Two processes (gloo, CPU) against one, with the same global batch: every recipe ends with the same metrics.

Each 2-process run goes through a real launcher (torchrun, and accelerate launch with the shipped DDP config), so
this also proves the recipes run unchanged under them and write their outputs once.
"""

import json
import math
import os
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.commands.config.config_args import load_config_from_file

from hf_recipes import recipes
from tests.conftest import cli_args, final_metrics, REPO, SAMPLES, TASK_DATA

CONFIGS = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))
BIN = Path(sys.executable).parent
# Dropout off: its masks come from each process's own random stream. Steps stay inside the first epoch, so no
# process pads its last batch with repeated samples.
NO_DROPOUT = "n_layer=1,n_embd=32,n_head=2,n_positions=128,resid_pdrop=0,embd_pdrop=0,attn_pdrop=0,summary_first_dropout=0"
TOLERANCE = 1e-5


def settings(tiny_model_args, name, output_dir, per_device_batch):
    return {**tiny_model_args, **TASK_DATA[name], "config_overrides": NO_DROPOUT, "output_dir": str(output_dir),
            "max_steps": 4, "per_device_train_batch_size": per_device_batch, "per_device_eval_batch_size": 4,
            "gradient_accumulation_steps": 1, "learning_rate": 1e-3, "logging_steps": 1, "use_cpu": True,
            "forgetting_eval_file": str(SAMPLES / "lyrics" / "songs.txt"), "forgetting_max_tokens": 2000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(launcher: list[str], name: str, values: dict, log: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [*launcher, "-m", "hf_recipes.cli", "train", name, *cli_args(values)]
    done = subprocess.run(command, env=env, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, timeout=600)
    assert done.returncode == 0, log.read_text()[-3000:]


def assert_same_metrics(one_process: dict, two_processes: dict) -> None:
    assert two_processes.keys() == one_process.keys()
    for key, value in one_process.items():
        scale = math.log if "perplexity" in key else float  # perplexity is exp(loss): compare it as a loss
        assert scale(two_processes[key]) == pytest.approx(scale(value), abs=TOLERANCE), key


def train_losses(output_dir: Path) -> list[float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [e["loss"] for e in state["log_history"] if "loss" in e]


def flatten(value, prefix="") -> dict:
    """Nested JSON as {path: leaf}; strings and None become exact-match keys, numbers stay comparable."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}/{i}").items()}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {prefix: value}
    return {f"{prefix}={value}": 0}


TORCHRUN = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TASK_DATA))
def test_two_processes_match_one_with_the_same_global_batch(name, tiny_model_args, tmp_path):
    one = recipes.get(name).run(**settings(tiny_model_args, name, tmp_path / "one", per_device_batch=8))
    two_dir = tmp_path / "two"
    # No --use_cpu: on a machine without GPUs the launched processes still form one run (gloo), not two runs.
    launched = {k: v for k, v in settings(tiny_model_args, name, two_dir, per_device_batch=4).items() if k != "use_cpu"}
    launch(TORCHRUN, name, launched, tmp_path / "two.log")

    two = json.loads((two_dir / "all_results.json").read_text())
    assert_same_metrics(final_metrics(one), final_metrics(two))
    assert two["train_loss"] == pytest.approx(one["train_loss"], abs=TOLERANCE)
    assert train_losses(two_dir) == pytest.approx(train_losses(tmp_path / "one"), abs=TOLERANCE)
    # The checks (leakage, fit verdict, label balance and baselines against the fine-tuned model) agree too.
    assert flatten(json.loads((two_dir / "checks.json").read_text())) == pytest.approx(
        flatten(json.loads((tmp_path / "one" / "checks.json").read_text())), rel=1e-6, abs=TOLERANCE)
    # Outputs are written once, by the main process, which says how many processes trained.
    log = (tmp_path / "two.log").read_text()
    assert log.count("Report written to") == 1
    assert len(re.findall(r'^ "eval_loss": ', log, flags=re.M)) == 1  # the final metrics JSON, printed once
    assert "x 2 process(es)" in (two_dir / "report.md").read_text()
    assert sorted(p.name for p in two_dir.iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


@pytest.mark.slow
def test_a_lora_run_launched_by_accelerate_with_the_shipped_config_matches_one_process(tiny_model_args, tmp_path):
    """`accelerate launch` with configs/accelerate/ddp.yaml, DDP over a PeftModel (only the adapters train): the
    same losses and metrics as one process."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from tests.conftest import TOKENIZER_DIR

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    config = GPT2Config(vocab_size=len(tokenizer))
    config.update_from_string(NO_DROPOUT)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    lora = {"model_name_or_path": str(tmp_path / "base"), "model_type": None, "config_overrides": None,
            "tokenizer_name": None, "use_peft": True, "lora_r": 4, "lora_dropout": 0.0, "forgetting_eval_file": None}
    one = recipes.get("lyrics").run(**{**settings(tiny_model_args, "lyrics", tmp_path / "one", 8), **lora})
    launcher = [str(BIN / "accelerate"), "launch", "--config_file", str(REPO / "configs" / "accelerate" / "ddp.yaml"),
                "--num_processes", "2", "--main_process_port", str(free_port())]
    launched = {k: v for k, v in settings(tiny_model_args, "lyrics", tmp_path / "two", 4).items() if k != "use_cpu"}
    launch(launcher, "lyrics", {**launched, **lora}, tmp_path / "two.log")
    two = json.loads((tmp_path / "two" / "all_results.json").read_text())
    assert_same_metrics(final_metrics(one), final_metrics(two))
    assert train_losses(tmp_path / "two") == pytest.approx(train_losses(tmp_path / "one"), abs=TOLERANCE)
    assert train_losses(tmp_path / "one")[0] != train_losses(tmp_path / "one")[-1]  # the adapters did train
    assert (tmp_path / "two" / "adapter_model.safetensors").is_file()
    assert "x 2 process(es)" in (tmp_path / "two" / "report.md").read_text()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_accelerate_config_loads(path):
    config = load_config_from_file(str(path))
    assert config.distributed_type.value == yaml.safe_load(path.read_text())["distributed_type"]
    assert config.num_processes >= 2


@pytest.mark.parametrize("stage", [2, 3])
def test_the_deepspeed_configs_shard_as_named_and_leave_the_batch_to_the_recipe(stage, monkeypatch):
    """What `accelerate launch --config_file deepspeed_zeroN.yaml` hands the processes, read back by accelerate's
    DeepSpeed plugin as the Trainer reads it: the ZeRO stage, and "auto" for every value the recipe's own flags
    set (a number here would contradict --per_device_train_batch_size or --gradient_accumulation_steps)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    path = REPO / "configs" / "accelerate" / f"deepspeed_zero{stage}.yaml"
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(
        ["--config_file", str(path), "train.py"]))
    assert args.use_deepspeed and not args.use_fsdp and not args.multi_gpu
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command does
    for key in [k for k in os.environ if k.startswith("ACCELERATE_")]:
        monkeypatch.delenv(key)
    for key, value in prepare_deepspeed_cmd_env(args)[1].items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()
    config = plugin.deepspeed_config
    assert config["zero_optimization"]["stage"] == stage
    assert {key: config[key] for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                                         "gradient_clipping")} == dict.fromkeys(
        ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"), "auto")
    assert "optimizer" not in config and "scheduler" not in config  # the Trainer's, from the recipe's flags
    # ZeRO-3 loads the base straight into shards and gathers one full model when saving: `generate` loads it.
    assert plugin.zero3_init_flag == (stage == 3)
    assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] == (stage == 3)


def test_deepspeed_is_an_extra_to_install():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [requirement.split(">")[0] for requirement in extras["deepspeed"]] == ["deepspeed"]
    for path in CONFIGS:
        if "DEEPSPEED" in path.read_text():
            assert "pip install 'hf-recipes[deepspeed]'" in path.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lyrics", "instruct"])
def test_eval_loss_is_the_mean_over_every_token_whatever_the_batch_size(name, tiny_model_args, tmp_path):
    trainer, prepared = recipes.get(name).build_trainer(**settings(tiny_model_args, name, tmp_path, 8))
    by_batch_size = {}
    for size in (1, 3):
        trainer.args.per_device_eval_batch_size = size
        by_batch_size[size] = trainer.evaluate()["eval_loss"]
    total, count = 0.0, 0
    model = prepared.model.eval()
    with torch.no_grad():
        for example in prepared.datasets["validation"]:
            ids, labels = torch.tensor([example["input_ids"]]), torch.tensor([example["labels"]])
            position_ids = torch.tensor([example["position_ids"]]) if "position_ids" in example else None
            logits = model(input_ids=ids, position_ids=position_ids).logits
            targets = labels[:, 1:]
            total += torch.nn.functional.cross_entropy(logits[0, :-1], targets[0], ignore_index=-100,
                                                       reduction="sum").item()
            count += int(targets.ne(-100).sum())
    assert by_batch_size[1] == pytest.approx(total / count, abs=1e-5)
    assert by_batch_size[3] == pytest.approx(total / count, abs=1e-5)


def test_a_finished_command_ends_its_process_group(tmp_path):
    # Left to interpreter teardown, gloo's threads can abort a launched run after it finished (SIGABRT).
    from hf_recipes import cli

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert cli.main(["list"]) == 0
        assert not torch.distributed.is_initialized()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
