"""The ``hf-recipes`` command.

    hf-recipes train RECIPE [--config FILE.yaml] [--any_argument value ...]
    hf-recipes sweep RECIPE --n_trials N [--config FILE.yaml] [--learning_rate_range MIN MAX] [--batch_sizes B ...]
                     [--epochs_range MIN MAX] [--warmup_range MIN MAX] [--weight_decay_range MIN MAX]
                     [--timeout SECONDS] [--any_argument value ...]
    hf-recipes print-config RECIPE [--config FILE.yaml] [--any_flag value ...]
    hf-recipes demo [RECIPE ...]
    hf-recipes predict [RECIPE] --model_dir DIR [--file FILE] [TEXT ...]   (classifier runs)
    hf-recipes generate --model_dir DIR --prompt "..."                   (runs prompted with text)
    hf-recipes generate --model_dir DIR --instruction "..." [--input ...] (runs prompted with an instruction)
    hf-recipes compare RUN_DIR [RUN_DIR ...] [--output FILE.png]
    hf-recipes list

Any TrainingArguments / model / data argument can be given as a flag and overrides the YAML file (TRL's names
too); ``hf-recipes train RECIPE --help`` lists the recipe's own with the values in effect, ``--help-all`` every one. Errors print one line (``error: ...``) and exit non-zero;
``--debug`` shows the traceback instead.

Only the commands that need them import torch and transformers, so help, ``list``, ``--version`` and argument
errors answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import textwrap
import threading
import typing
from pathlib import Path

from hf_recipes import __version__
from hf_recipes.errors import RecipeError, did_you_mean, one_line
from hf_recipes.files import check_regular_file
from hf_recipes.generation import GenerationArguments
from hf_recipes.help import WIDTH
from hf_recipes.run_folder import CLASSIFIER, RECIPE_FILE
from hf_recipes.search_space import SweepArguments


def read_lines(path: str) -> list[str]:
    check_regular_file(path, "file")
    file = Path(path)
    try:
        return [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise RecipeError(f"file is not UTF-8 text: {path}") from None


def recipe_for(opts, extra: list[str]):
    """The Recipe of ``train/sweep/print-config RECIPE``; with --help (--help-all), print the recipe's flags and
    return None. Help and unknown flags of a built-in recipe are answered from the flag index, without loading the
    recipe."""
    from hf_recipes import flag_index, recipes

    wants_help = opts.help or opts.help_all
    if opts.recipe is None and not wants_help:
        raise RecipeError(f"{opts.parser.prog}: give a recipe (one of {', '.join(recipes.available())})")
    indexed = flag_index.lookup(opts.recipe) if opts.recipe is not None else None
    if not wants_help:
        if indexed:
            flag_index.check_flags(extra, indexed["flags"])
        return recipes.get(opts.recipe)
    print(opts.parser.format_help())
    if opts.recipe is not None:
        from hf_recipes.config_file import load_yaml
        from hf_recipes.help import render

        config = opts.config or recipes.default_config(opts.recipe)
        fields = indexed["fields"] if indexed else flag_index.entry(recipes.get(opts.recipe))["fields"]
        print(textwrap.fill(f"Flags of the {opts.recipe} recipe, with the values in effect ({config} over the "
                            "built-in defaults); each overrides the YAML file."
                            + ("" if opts.help_all else " --help-all: every flag, with full help."), WIDTH) + "\n")
        print(render(fields, load_yaml(config), full=opts.help_all).rstrip("\n"))
    return None


def cmd_train(opts, extra: list[str]) -> int:
    recipe = recipe_for(opts, extra)
    if recipe is None:
        return 0
    metrics = recipe.run(opts.config, extra)
    if is_main_process():  # every process of a launched run returns the metrics; one prints them
        print(json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, indent=1))
    return 0


def cmd_print_config(opts, extra: list[str]) -> int:
    recipe = recipe_for(opts, extra)
    if recipe is None:
        return 0
    from hf_recipes.config import resolved_yaml

    print(resolved_yaml(recipe.parse(opts.config, extra), recipe.unused_flags), end="")
    return 0


def cmd_sweep(opts, extra: list[str]) -> int:
    if recipe_for(opts, extra) is None:
        return 0
    if opts.n_trials is None:
        raise RecipeError(f"{opts.parser.prog}: the following arguments are required: --n_trials")
    from hf_recipes.sweep import require_optuna, run_sweep

    require_optuna()
    settings = SweepArguments(
        n_trials=opts.n_trials,
        timeout=opts.timeout,
        learning_rate_range=opts.learning_rate_range,
        batch_sizes=opts.batch_sizes,
        epochs_range=opts.epochs_range,
        warmup_range=opts.warmup_range,
        weight_decay_range=opts.weight_decay_range,
    )
    run_sweep(opts.recipe, opts.config, extra, settings)
    return 0


def cmd_demo(opts, extra: list[str]) -> int:
    from hf_recipes import flag_index, recipes

    names = opts.recipes or recipes.available()
    for name in names:  # flag errors before any recipe is imported (with torch)
        indexed = flag_index.lookup(name) if name in recipes.available() else None
        if indexed:
            flag_index.check_flags(extra, indexed["flags"])
    from hf_recipes.run_folder import recipe_of
    from hf_recipes.report import key_metrics

    for name in names:
        recipe = recipes.get(name)
        args = recipe.parse(recipes.demo_config(name), extra)
        # The demo runs again over its own earlier output; a folder of anything else is refused as for train.
        args.run.overwrite_output_dir |= recipe_of(Path(args.training.output_dir)) == name
        metrics = recipe.run_from_args(args)
        if not is_main_process():
            continue
        summary = {k: round(v, 4) for k, v in key_metrics(metrics).items() if k.startswith("test_")}
        print(f"[{name}] report: {Path(args.training.output_dir) / 'report.md'}  {json.dumps(summary)}")
    return 0


def reject_flags(opts, extra: list[str]) -> None:
    """Flags the command does not know are an error that names the closest one it does."""
    flags = [a for a in extra if a.startswith("-")]
    if flags:
        known = [f for action in opts.parser._actions for f in action.option_strings if f.startswith("--")]
        raise RecipeError(f"unknown argument '{flags[0]}'{did_you_mean(flags[0], known)}")


def cmd_predict(opts, extra: list[str]) -> int:
    from hf_recipes import recipes

    reject_flags(opts, extra)
    texts = list(opts.texts) + extra
    # RECIPE may be left out (the run's recipe.json names it): a first word that names no recipe is a text.
    named = texts.pop(0) if texts and texts[0] in recipes.available() else None
    saved = saved_run(opts.model_dir)
    kind = recipes.get(named).kind.name if named else saved.get("model_kind")
    if kind is not None and kind != CLASSIFIER:
        raise RecipeError(f"predict is for classification recipes; use `hf-recipes generate` for "
                          f"{named or saved.get('recipe')}")
    from hf_recipes.predict import classify

    texts += read_lines(opts.file) if opts.file else []
    for result in classify(opts.model_dir, texts, batch_size=opts.batch_size,
                           trust_remote_code=opts.trust_remote_code):
        print(f"{result['label']}\t{result['score']:.4f}\t{result['text']}")
    return 0


def saved_run(model_dir: str) -> dict:
    """A run's recipe.json (its recipe and model kind), read without torch; {} for a folder without a readable one
    (the classifier loader names what is wrong with the folder)."""
    try:
        saved = json.loads((Path(model_dir) / RECIPE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def cmd_generate(opts, extra: list[str]) -> int:
    reject_flags(opts, extra)
    if extra:
        raise RecipeError(f"unknown argument '{extra[0]}'")
    from transformers import AutoTokenizer

    from hf_recipes import recipes
    from hf_recipes.generation import AnswerArguments, generate, load_causal_lm, settings_of_run
    from hf_recipes.prompts import PromptFormat
    from hf_recipes.run_folder import CAUSAL_LM, load_recipe_file, open_model_dir

    open_model_dir(opts.model_dir, CAUSAL_LM, opts.trust_remote_code)
    saved = load_recipe_file(opts.model_dir)
    prompting = None
    if "prompt_format" in saved:  # the run's own (recipe.json), so no recipe code is needed
        prompting = PromptFormat.of(saved["prompt_format"])
    elif saved.get("recipe") in recipes.registered():  # a recipe.json written before it held the prompt format
        recipe = recipes.get(saved["recipe"])
        known = {f.name for f in dataclasses.fields(recipe.task_args_class) if f.init}
        prompting = recipe.prompt_format(recipe.task_args_class(**{k: v for k, v in saved.get("task", {}).items()
                                                                  if k in known}))
    if prompting is None:  # a model folder of another kind: an instruction gets the Alpaca prompt, a prompt as given
        prompting = PromptFormat.alpaca() if opts.instruction else PromptFormat(missing="give at least one --prompt")
    tokenizer = (AutoTokenizer.from_pretrained(opts.model_dir, trust_remote_code=opts.trust_remote_code)
                 if prompting.chat else None)
    prompts = prompting.prompts(opts.prompt, opts.instruction, opts.input, tokenizer)
    # A run's recipe.json holds all its decoding settings; a folder without one decodes an instruction as the
    # instruction recipes answer, a prompt with the defaults.
    defaults = AnswerArguments if opts.instruction and not saved["recipe"] else GenerationArguments
    settings = settings_of_run(defaults, saved["task"],
                               **{f.name: getattr(opts, f.name) for f in dataclasses.fields(GenerationArguments)})
    model, tokenizer = load_causal_lm(opts.model_dir, opts.trust_remote_code)
    answers = generate(model, tokenizer, prompts, settings, add_bos=prompting.add_bos)
    for prompt, text in zip(prompts, answers):
        print(f"{prompt}{text}" if prompting.echo else text.strip())
        print()
    return 0


def cmd_compare(opts, extra: list[str]) -> int:
    reject_flags(opts, extra)
    from hf_recipes.compare import compare_runs

    compare_runs(opts.run_dirs, opts.output)
    return 0


def cmd_list(opts, extra: list[str]) -> int:
    from hf_recipes import recipes

    reject_flags(opts, extra)

    for name in recipes.available():
        demo = recipes.demo_config(name)
        print(f"{name}\t{recipes.default_config(name)}" + (f"\tdemo: {demo}" if demo.is_file() else ""))
    return 0


def boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered not in {"1", "true", "yes", "0", "false", "no"}:
        raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")
    return lowered in {"1", "true", "yes"}


class ArgumentParser(argparse.ArgumentParser):
    """Argument errors are one ``error:`` line (with the command's name), not a usage dump."""

    def error(self, message):
        raise RecipeError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="hf-recipes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser.add_argument("--version", action="version", version=f"hf-recipes {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_recipe_command(name: str, **kwargs) -> argparse.ArgumentParser:
        # Own --help: it lists the recipe's flags too, which only the recipe module knows.
        command = sub.add_parser(name, add_help=False, formatter_class=lambda prog: argparse.HelpFormatter(
            prog, width=WIDTH), **kwargs)
        command.add_argument("recipe", nargs="?", help="a recipe's name (see `hf-recipes list`)")
        command.add_argument("-h", "--help", action="store_true",
                             help="show this help with the flags of RECIPE and the values in effect")
        command.add_argument("--help-all", action="store_true",
                             help="the same with every flag (all TrainingArguments) and its full help")
        command.add_argument("--config", help="YAML file (default: the recipe's own hf_recipes/recipes/<recipe>.yaml)")
        return command

    train = add_recipe_command("train", help="train a recipe (YAML config, flags override it)",
                               usage="hf-recipes train RECIPE [--config FILE.yaml] [--any_flag value ...]")
    train.set_defaults(func=cmd_train)
    print_config = add_recipe_command(
        "print-config", help="print the settings a train run would use (YAML file and flags) as YAML, and stop",
        usage="hf-recipes print-config RECIPE [--config FILE.yaml] [--any_flag value ...]")
    print_config.set_defaults(func=cmd_print_config)

    sweep_defaults = {f.name: f.default for f in dataclasses.fields(SweepArguments)}
    # No abbreviations: --learning_rate and --weight_decay are recipe flags, not short for the range flags.
    sweep = add_recipe_command("sweep", allow_abbrev=False,
                               help="search learning rate, batch size, epochs, warmup and weight decay (Optuna)")
    sweep.add_argument("--n_trials", type=int, help="number of trials (required)")
    sweep.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    sweep.add_argument("--learning_rate_range", type=float, nargs=2, metavar=("MIN", "MAX"),
                       help="log-uniform (default: the config's learning_rate / 10 to * 10)")
    sweep.add_argument("--batch_sizes", type=int, nargs="+", metavar="B",
                       help="per-device train batch sizes to try (default: half, same and double the config's)")
    sweep.add_argument("--epochs_range", type=int, nargs=2, metavar=("MIN", "MAX"),
                       help="whole epochs (default: 1 to twice the config's; not searched when max_steps is set)")
    sweep.add_argument("--warmup_range", type=float, nargs=2, metavar=("MIN", "MAX"),
                       default=sweep_defaults["warmup_range"], help="warmup as a share of the total steps (default: "
                       "{} {})".format(*sweep_defaults["warmup_range"]))
    sweep.add_argument("--weight_decay_range", type=float, nargs=2, metavar=("MIN", "MAX"),
                       default=sweep_defaults["weight_decay_range"],
                       help="default: {} {}".format(*sweep_defaults["weight_decay_range"]))
    sweep.set_defaults(func=cmd_sweep)

    demo = sub.add_parser("demo", help="offline demo of every recipe (tiny model, bundled data)")
    demo.add_argument("recipes", nargs="*")
    demo.set_defaults(func=cmd_demo)

    predict = sub.add_parser("predict", help="label texts with a saved classifier",
                             usage="hf-recipes predict [RECIPE] --model_dir DIR [--file FILE] [TEXT ...]")
    predict.add_argument("texts", nargs="*", metavar="TEXT",
                         help="texts to label; a first word naming a recipe is the recipe")
    predict.add_argument("--model_dir", required=True)
    predict.add_argument("--file", help="a UTF-8 file with one text per line")
    predict.add_argument("--batch_size", type=int, default=32)
    predict.add_argument("--trust_remote_code", type=boolean, default=False,
                         help="run the model folder's own Python code (auto_map); off by default")
    predict.set_defaults(func=cmd_predict)

    gen = sub.add_parser("generate", help="generate text with a saved causal-LM run")
    gen.add_argument("--model_dir", required=True)
    gen.add_argument("--prompt", action="append", help="a prompt, put in the run's prompt format (repeatable), for "
                                                        "runs prompted with text")
    gen.add_argument("--instruction", help="the instruction, for runs prompted with one")
    gen.add_argument("--input", default="", help="the optional input of the instruction")
    # Unset decoding flags take the run's own settings (its recipe.json), so the model decodes as in its report.
    decoding = gen.add_argument_group("decoding (a flag not given: the run's own setting, from its recipe.json, else "
                                      "the recipe's default)")
    hints = typing.get_type_hints(GenerationArguments)
    for setting in dataclasses.fields(GenerationArguments):
        kind = next(t for t in typing.get_args(hints[setting.name]) or (hints[setting.name],) if t is not type(None))
        spellings = ["--generation_seed", "--seed"] if setting.name == "generation_seed" else [f"--{setting.name}"]
        decoding.add_argument(*spellings, dest=setting.name, type=boolean if kind is bool else kind,
                              help=setting.metadata.get("help"))
    gen.add_argument("--trust_remote_code", type=boolean, default=False,
                     help="run the model folder's own Python code (auto_map); off by default")
    gen.set_defaults(func=cmd_generate)

    compare = sub.add_parser("compare", help="one table of the settings and metrics of finished runs, and their "
                                             "loss curves in one plot")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="output_dir of a finished run")
    compare.add_argument("--output", default="compare.png", help="the PNG of the loss curves")
    compare.set_defaults(func=cmd_compare)

    listing = sub.add_parser("list", help="list the recipes and their configs")
    listing.set_defaults(func=cmd_list)
    for command in sub.choices.values():
        command.set_defaults(parser=command)  # for errors and help that name the command's own flags
    return parser


def raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def is_main_process() -> bool:
    """False in every process of a launched run (torchrun, accelerate launch) but the one of global rank 0."""
    distributed = sys.modules.get("torch.distributed")  # never imported for commands that train nothing
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        return distributed.get_rank() == 0
    return True


def close_process_group() -> None:
    """End a launched run's process group before the interpreter exits.

    Left to interpreter teardown, gloo's worker threads can outlive it and abort the process ("terminate called
    without an active exception"), failing a run that finished. Only after success: on an error the other
    processes may still be inside a collective, and destroying the group then can hang.
    """
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    owns_process = argv is None  # the hf-recipes command, not a call from Python: the process ends with main
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    # A kill (SIGTERM) ends a run the way Ctrl-C does: one line, and output_dir keeps only finished checkpoints.
    previous = signal.signal(signal.SIGTERM, raise_interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        opts, extra = build_parser().parse_known_args(argv)
        extra = [a for a in extra if a != "--debug"]
        code = opts.func(opts, extra)
        close_process_group()
        return code
    except RecipeError as err:
        if debug:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        if owns_process and previous is not None:
            # The process is ending: a second Ctrl-C or kill, even during interpreter shutdown (where Python puts
            # back the default handlers it installed), must not turn exit code 2 into the shell's 130.
            previous = None
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("error: interrupted; run the same command again to resume from the newest checkpoint, if one was "
              "saved", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - one line by default, the traceback with --debug
        if debug:
            raise
        print(f"error: {type(err).__name__}: {one_line(err)} (run with --debug for the traceback)", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
