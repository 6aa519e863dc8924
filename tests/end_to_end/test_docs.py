"""The shell commands of README.md, docs/*.md and CONTRIBUTING.md work as written.

Every line of a ```bash block (a trailing backslash joins lines, `#` starts a comment) is one command, checked by
what it is:

- `hf-recipes list`, `--version`, `--help`, `train RECIPE --help` and `print-config ...` run for real;
- a training command (`hf-recipes train RECIPE ...`, `torchrun` / `accelerate launch ... -m hf_recipes.cli train
  ...`, `hf-recipes sweep ...`, `hf-recipes demo ...`) has its settings parsed by `hf-recipes print-config RECIPE`
  with the same flags; QLoRA (`--load_in_4bit true`) is refused in one line where there is no CUDA GPU;
- `predict`, `generate` and `compare` parse; the slow test runs them on small trained runs;
- `make TARGET ...` names a Makefile target, and the `hf-recipes` command it runs (`make -n`) is checked as above;
- `pip install` names an extra the package has.

Placeholders: `path/to/...` is a file of the user's own; a data file given to a flag is replaced by the bundled
sample of its kind. `runs/...` is the output of an earlier command (a `--config runs/...yaml` is checked as the
recipe's demo config). A command no rule covers fails the test: give it a rule here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hf_recipes import cli
from hf_recipes.recipes import available, demo_config
from tests.conftest import REPO, SAMPLES

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]  # the user docs
COMMAND_FILES = [*DOC_FILES, REPO / "CONTRIBUTING.md"]
SHELL_FENCE = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.M | re.S)
DATA_FLAGS = {"--train_file", "--validation_file", "--test_file", "--file", "--forgetting_eval_file"}
SAMPLE_FILES = {"sentiment": SAMPLES / "sentiment" / "train.csv", "lyrics": SAMPLES / "lyrics" / "songs.txt",
                "instruct": SAMPLES / "instructions" / "instructions.json"}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
# Under `make test ARGS=...` the environment holds that make's variables, which a nested make would take as its own.
MAKE_VARIABLES = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES",
                  *re.findall(r"^(\w+)\s*\??=", (REPO / "Makefile").read_text(), re.M)}
HF_RECIPES = str(Path(sys.executable).with_name("hf-recipes"))


def shell_commands(path: Path) -> list[tuple[str, list[str]]]:
    """(where, argv) of every command in the file's shell blocks."""
    text = path.read_text(encoding="utf-8")
    commands = []
    for block in SHELL_FENCE.finditer(text):
        joined, start = "", None
        for number, line in enumerate(block.group(1).splitlines(), text.count("\n", 0, block.start(1)) + 1):
            start = number if start is None else start
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
                continue
            argv = shlex.split(joined + line, comments=True)
            if argv:
                commands.append((f"{path.relative_to(REPO)}:{start}", argv))
            joined, start = "", None
    return commands


COMMANDS = [command for path in COMMAND_FILES for command in shell_commands(path)]


def without_env(argv: list[str]) -> list[str]:
    """The command without leading NAME=value assignments."""
    while argv and re.fullmatch(r"[A-Z_]+=.*", argv[0]):
        argv = argv[1:]
    return argv


def hf_recipes_argv(argv: list[str]) -> list[str] | None:
    """The arguments an `hf-recipes` command gets: from `hf-recipes ...`, `python -m hf_recipes ...`, or a
    launcher's `... -m hf_recipes.cli ...` (whose --config_file must exist); None for another command."""
    if argv[0] == "hf-recipes":
        return argv[1:]
    if "-m" in argv and argv[argv.index("-m") + 1] in {"hf_recipes", "hf_recipes.cli"}:
        launcher = argv[:argv.index("-m")]
        if "--config_file" in launcher:
            config_file = launcher[launcher.index("--config_file") + 1]
            assert (REPO / config_file).is_file(), f"{config_file} does not exist"
        return argv[argv.index("-m") + 2:]
    return None


def with_samples(recipe: str, flags: list[str]) -> list[str]:
    """Data placeholders replaced by the bundled sample of the recipe; a YAML an earlier command writes by the
    recipe's demo config."""
    flags = list(flags)
    for i, value in enumerate(flags[1:], 1):
        if flags[i - 1] in DATA_FLAGS and value.startswith("path/to/"):
            flags[i] = str(SAMPLE_FILES[recipe])
        if flags[i - 1] == "--config" and value.startswith("runs/"):
            flags[i] = str(demo_config(recipe))
    return flags


def needs_cuda(flags: list[str]) -> bool:
    """QLoRA (4-bit bitsandbytes) runs on CUDA GPUs only."""
    return "--load_in_4bit" in flags and flags[flags.index("--load_in_4bit") + 1] == "true"


def print_config(recipe: str, flags: list[str], capsys) -> dict:
    """The settings `hf-recipes print-config RECIPE FLAGS` resolves (in this process: torch is imported once)."""
    import torch

    code = cli.main(["print-config", recipe, *with_samples(recipe, flags)])
    out, err = capsys.readouterr()
    if needs_cuda(flags) and not torch.cuda.is_available():
        assert code == 2 and "needs a CUDA GPU" in err, err
        return {}
    assert code == 0, err
    settings = yaml.safe_load(out)
    assert isinstance(settings, dict) and settings["output_dir"], out
    return settings


def run(argv: list[str], env: dict = ENV, timeout: int = 60) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{shlex.join(argv)}: {done.stderr[-2000:]}"
    return done


def check_make(argv: list[str], capsys) -> None:
    """`make TARGET VAR=...`: a Makefile target; the `hf-recipes` command it runs (`make -n` shows which) is checked
    as if it were on the page."""
    makefile = (REPO / "Makefile").read_text()
    for target in [word for word in argv[1:] if "=" not in word]:
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"no make target {target}"
    dry = run(["make", "-n", "-s", *argv[1:]], env={k: v for k, v in ENV.items() if k not in MAKE_VARIABLES})
    for line in dry.stdout.splitlines():
        if "/hf-recipes " in line:
            words = shlex.split(line)
            check_hf_recipes(words[[word.endswith("/hf-recipes") for word in words].index(True) + 1:], capsys)


def check_pip(argv: list[str]) -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    for spec in argv[2:]:
        extras = re.fullmatch(r"hf-recipes\[([\w,]+)\]", spec)
        assert spec == "." or extras, f"pip install {spec}: not this package"
        for extra in extras.group(1).split(",") if extras else []:
            assert re.search(rf"^{extra} = \[", pyproject, re.M), f"no extra {extra} in pyproject.toml"


def parses(args: list[str]):
    """The options and leftover words of a command, as the CLI's parser reads them."""
    return cli.build_parser().parse_known_args(args)


def check_hf_recipes(args: list[str], capsys) -> None:
    command = args[0]
    if command in {"list", "--version", "--help"} or {"--help", "--help-all", "-h"} & set(args):
        assert run([HF_RECIPES, *args]).stdout.strip()
    elif command in {"train", "print-config"}:
        print_config(args[1], args[2:], capsys)
    elif command == "sweep":
        opts, extra = parses(args)
        assert opts.n_trials, "a sweep needs --n_trials"
        print_config(opts.recipe, extra + (["--config", opts.config] if opts.config else []), capsys)
    elif command == "demo":
        opts, extra = parses(args)
        for recipe in opts.recipes or available():
            print_config(recipe, ["--config", str(demo_config(recipe)), *extra], capsys)
    elif command in {"predict", "generate", "compare"}:
        opts, extra = parses(args)
        assert not [word for word in extra if word.startswith("-")], f"unknown flags {extra}"
        assert command == "predict" or not extra, f"unexpected words {extra}"
    else:
        pytest.fail(f"no check for `hf-recipes {command}`: add one to tests/end_to_end/test_docs.py")


@pytest.mark.parametrize("where, argv", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_a_documented_command_works_as_written(where, argv, capsys):
    argv = without_env(argv)
    args = hf_recipes_argv(argv)
    if args is not None:
        check_hf_recipes(args, capsys)
    elif argv[0] == "make":
        check_make(argv, capsys)
    elif argv[:2] == ["pip", "install"]:
        check_pip(argv)
    else:
        pytest.fail(f"{where}: no check for `{shlex.join(argv)}`: add one to tests/end_to_end/test_docs.py")


def anchors(path: Path) -> set[str]:
    """The #anchors of a page's headings, as GitHub makes them."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S),
                          re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_the_pages_have_commands_and_link_to_pages_that_exist():
    assert len(COMMANDS) >= 30 and {where.split(":")[0] for where, _ in COMMANDS} >= {"README.md",
                                                                                      "docs/configuration.md"}
    for path in [*DOC_FILES, REPO / "CONTRIBUTING.md", REPO / "bench" / "RESULTS.md"]:
        for target, anchor in re.findall(r"\]\(([^)#]*\.md)?(?:#([^)]*))?\)", path.read_text(encoding="utf-8")):
            page = path.parent / target if target else path
            assert page.is_file(), f"{path.relative_to(REPO)} links to missing {target}"
            assert not anchor or anchor in anchors(page), f"{path.relative_to(REPO)} links to missing {target}#{anchor}"


def test_the_python_examples_compile():
    blocks = [(path, block) for path in COMMAND_FILES
              for block in re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), re.M | re.S)]
    assert len(blocks) >= 5
    for path, block in blocks:
        compile(block, str(path), "exec")


def test_the_files_the_pages_name_exist():
    """A module, test or config moved or renamed leaves no page naming its old place."""
    for path in [*COMMAND_FILES, REPO / "bench" / "RESULTS.md"]:
        text = path.read_text(encoding="utf-8")
        named = re.findall(r"`((?:hf_recipes|tests|bench|configs|\.ci)/[^`<> ]+)`", text)
        for name in named + re.findall(r"\bbench/\w+\.py\b", text):
            assert (REPO / name).exists(), f"{path.relative_to(REPO)} names {name}, which does not exist"


def test_user_docs_name_no_local_data_folder():
    for path in DOC_FILES:
        assert "../shared" not in path.read_text(encoding="utf-8"), path


def test_the_readme_stays_short():
    assert len((REPO / "README.md").read_bytes()) < 8 * 1024


RUN_COMMANDS = [(where, argv) for where, argv in COMMANDS if argv[1:2] in (["predict"], ["generate"], ["compare"])]
SMALL_RUN = ["--config_overrides", "n_layer=1,n_embd=32,n_head=2,n_positions=128", "--max_steps", "2",
             "--max_eval_samples", "8", "--max_test_samples", "8", "--eval_strategy", "no", "--save_strategy", "no",
             "--load_best_model_at_end", "false", "--logging_steps", "1", "--check_leakage", "false",
             "--check_fitting", "false", "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory) -> dict[str, Path]:
    """A run of each recipe trained for two steps: the runs/... folders the pages' commands use."""
    runs = tmp_path_factory.mktemp("runs")
    for recipe in available():
        task = ["--max_new_tokens", "8"] if recipe != "sentiment" else ["--classification_baselines", "false"]
        assert cli.main(["train", recipe, "--config", str(demo_config(recipe)), "--output_dir", str(runs / recipe),
                         *SMALL_RUN, *task]) == 0
    (runs / "texts.txt").write_text("what a lovely day\nugh, mondays\n")
    return {**{recipe: runs / recipe for recipe in available()}, "texts": runs / "texts.txt"}


@pytest.mark.slow
@pytest.mark.parametrize("where, argv", RUN_COMMANDS, ids=[where for where, _ in RUN_COMMANDS])
def test_a_documented_predict_or_generate_runs(where, argv, small_runs, tmp_path, capsys):
    """predict, generate and compare, run on small trained runs of the right recipe (it takes a few seconds)."""
    command, args = argv[1], list(argv[2:])
    recipe = {"predict": "sentiment", "compare": "sentiment"}.get(command,
                                                                  "instruct" if "--instruction" in args else "lyrics")
    for i, value in enumerate(args):
        previous = args[i - 1] if i else None
        if previous == "--file":
            args[i] = str(small_runs["texts"])
        elif previous == "--output":
            args[i] = str(tmp_path / value)
        elif value.startswith(("runs/", "path/to/")):
            args[i] = str(small_runs[recipe])
    code = cli.main([command, *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    if command == "predict":
        opts, extra = parses([command, *args])
        texts = [text for text in opts.texts + extra if text not in available()] + (2 * [""] if opts.file else [])
        labels = [line.split("\t")[0] for line in out.splitlines()]
        assert len(labels) == len(texts) and set(labels) <= {"negative", "neutral", "positive"}, out
    elif command == "generate":
        assert out.strip(), "no text generated"
    else:
        assert (tmp_path / "compare.png").is_file() and "sentiment" in out, out
