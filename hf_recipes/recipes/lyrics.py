"""Song lyrics: causal-LM fine-tuning of GPT-2 (GPT2LMHeadModel) on packed blocks of whole songs.

Python API::

    from hf_recipes.recipes import lyrics
    metrics = lyrics.run(lyrics.demo_config)
    lyrics.generate("runs/demo/lyrics", ["Down by the river"], temperature=0.7)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import ClassVar, Sequence

import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, IterableDataset
from transformers import AutoModelForCausalLM, default_data_collator

from hf_recipes.config import RecipeArgs
from hf_recipes.data import carve_splits, check_local_file, load_splits, load_streaming, rows_of
from hf_recipes.errors import RecipeError
from hf_recipes.generation import GenerationArguments, generate as generate_text, load_causal_lm, settings_of_run
from hf_recipes.model import (check_room, encode, keep_packed_sequences_apart, load_model, load_tokenizer,
                              max_length)
from hf_recipes.checks import FitCheck, LeakageCheck
from hf_recipes.forgetting import ForgettingCheck
from hf_recipes.model_kinds import CAUSAL_LM_KIND
from hf_recipes.prompts import PromptFormat
from hf_recipes.model_card import CardExample
from hf_recipes.recipe import Prepared, Recipe
from hf_recipes.run_folder import load_recipe_file
from hf_recipes.report import markdown_table, per_split

HERE = files(__package__)
BLANK_LINE = "\n\n"
MIN_BLOCK_SIZE = 8  # a block shorter than a line of lyrics (about 10 tokens) teaches next to nothing
BLOCK_NEEDS = f"a block needs at least {MIN_BLOCK_SIZE} tokens, about a line of lyrics"


@dataclass
class LyricsArguments(GenerationArguments):
    # TRL's packing (aliases.py): what this recipe always does
    built_in_aliases: ClassVar[dict[str, str]] = {
        "packing": "the lyrics recipe always packs whole songs into blocks of block_size tokens"}
    song_separator: str = field(
        default=BLANK_LINE, metadata={"help": "What separates songs in a .txt file (default: a blank line)."}
    )
    block_size: int | None = field(
        default=None, metadata={"help": "Tokens per packed block (default: the model context, 1,024 for GPT-2)."}
    )
    reset_position_ids: bool = field(
        default=True,
        metadata={"help": "Restart position ids at every song inside a block, so songs do not attend to each other."},
    )
    test_split_percentage: float = field(
        default=10, metadata={"help": "Percent of songs carved out as test when there is no test split."}
    )
    title_column: str | None = field(
        default=None,
        metadata={"help": "Column holding each song's title (csv / json / parquet / hub data). Each song is then "
                          "trained as its title, a blank line and its lyrics, and every prompt is a title."},
    )
    prompts: list[str] = field(
        default_factory=lambda: ["Down by the river", "Oh my darling", "The night is"],
        metadata={"help": "Prompts generated from before and after training, shown side by side in the report "
                          "(titles when title_column is set)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.song_separator:
            raise RecipeError("song_separator is empty: give the text that separates songs (default: a blank line)")
        if self.block_size is not None:
            check_room(self.block_size, MIN_BLOCK_SIZE, f"block_size {self.block_size}",
                       BLOCK_NEEDS + " (the model context, e.g. 128 or 1024, is usual)", "block_size")


def title_prompt(title: str) -> str:
    """The head of a song trained with its title, and what a title prompt becomes: the title, then a blank line."""
    return title.strip() + BLANK_LINE


def model_prompts(prompts: Sequence[str], title_column: str | None) -> list[str]:
    """What the model is given for each prompt: a title prompt when the run was trained with titles."""
    return [title_prompt(p) for p in prompts] if title_column else list(prompts)


def split_songs(text: str, separator: str) -> list[str]:
    """Songs of a text file: split at ``separator`` (a blank line, however many spaces it holds, by default)."""
    parts = re.split(r"\n[ \t]*\n", text) if separator == BLANK_LINE else text.split(separator)
    return [song.strip() for song in parts if song.strip()]


def read_songs(path: str, separator: str) -> list[str]:
    """Songs from one .txt file, or one song per .txt file of a folder."""
    folder = Path(path)
    if folder.is_dir():
        files = sorted(folder.glob("*.txt"))
        if not files:
            raise RecipeError(f"train_file folder {path} holds no .txt files")
        songs = []
        for file in files:
            check_local_file(str(file), "train_file")
            songs += [song] if (song := file.read_text(encoding="utf-8").strip()) else []
        return songs
    check_local_file(path, "train_file")
    return split_songs(Path(path).read_text(encoding="utf-8"), separator)


def load_songs(args: RecipeArgs) -> DatasetDict:
    """One row per song; validation and test are carved by song, so no song is split across them."""
    data, seed, text = args.data, args.training.seed, args.data.text_column
    train_file, test_share = data.train_file, args.task.test_split_percentage
    if data.streaming:
        return stream_songs(args)
    if train_file and (Path(train_file).is_dir() or train_file.endswith(".txt")) and not data.validation_file:
        songs = Dataset.from_dict({text: read_songs(train_file, args.task.song_separator)})
        if len(songs) < 3:
            raise RecipeError(f"need at least 3 songs to carve validation and test splits, found {len(songs)}")
        if args.task.title_column:
            raise RecipeError("title_column needs data with a title per song (csv / json / parquet / hub data); "
                              f"{train_file} holds plain text")
        return carve_splits(DatasetDict({"train": songs}), data, seed, test_split_percentage=test_share)
    title = args.task.title_column
    raw = load_splits(data, args.model, seed, required_columns=(text, title) if title else (text,),
                      text_columns=(text, title) if title else (text,),
                      test_split_percentage=test_share)
    for split, songs in raw.items():
        untitled = sum(not isinstance(t, str) or not t.strip() for t in songs[title]) if title else 0
        if untitled:
            raise RecipeError(f"{untitled} {split} songs have no '{title}'")
    return raw


def stream_songs(args: RecipeArgs) -> DatasetDict:
    """``--streaming true``: songs as a stream (a .txt file: one song per blank-line-separated paragraph)."""
    data, title = args.data, args.task.title_column
    text_file = bool(data.train_file) and data.train_file.endswith(".txt")
    if text_file and (args.task.song_separator != BLANK_LINE or data.text_column != "text" or title):
        raise RecipeError("streaming a .txt file reads one song per blank-line-separated paragraph into the 'text' "
                          "column: leave song_separator, text_column and title_column at their defaults")
    if data.train_file and Path(data.train_file).is_dir():
        raise RecipeError(f"--streaming true reads one file, not the folder {data.train_file}")
    columns = (data.text_column, title) if title else (data.text_column,)
    raw = load_streaming(data, args.model, args.training, args.checks.dedupe_splits, with_test=True,
                         required_columns=columns, text_columns=columns, text_kwargs={"sample_by": "paragraph"})
    if text_file:  # as read_songs does: each song stripped, blank ones dropped
        raw = DatasetDict({split: songs.map(lambda song: {"text": song["text"].strip()})
                           .filter(lambda song: bool(song["text"])) for split, songs in raw.items()})
    return raw


class BlockPacker:
    """Songs (each already ending in EOS) concatenated and cut into full blocks of ``block_size``, batch by batch:
    a batched ``Dataset.map`` in one process calls it on the songs in order, and what a batch leaves over (less than
    a block) goes on in the next, so a split is packed as one stream with only the tail after its last song
    dropped, while holding no more than one batch of songs.

    Every computed token is real. Position ids restart at each song and at each block, so a block holding
    several songs gets a block-diagonal causal mask (transformers builds it from the restarts when no attention
    mask is given) and a song never attends to the one before it.

    Each run of positions from 0 is one sequence, as in transformers' ``DataCollatorWithFlattening``: labels equal
    the input ids except at a sequence's first token, which nothing in its sequence precedes, so it is -100 (not a
    target; otherwise a song's first token would be predicted from the previous song's EOS). A song that a block
    boundary cuts goes on in the next block as a sequence of its own: positions from 0, without sight of its
    earlier part, its first token not a target.
    """

    def __init__(self, block_size: int, reset_position_ids: bool):
        self.block_size, self.reset_position_ids = block_size, reset_position_ids
        self.ids: list[int] = []
        self.song_starts: list[bool] = []  # per token in self.ids: whether a song starts there

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        for tokens in batch["tokens"]:
            self.ids += tokens
            self.song_starts += [True] + [False] * (len(tokens) - 1)
        blocks: dict[str, list] = {"input_ids": [], "labels": [], "position_ids": []}
        full = len(self.ids) // self.block_size * self.block_size
        for start in range(0, full, self.block_size):
            ids = self.ids[start : start + self.block_size]
            positions, position = [], 0
            for i, song_start in enumerate(self.song_starts[start : start + self.block_size]):
                if i == 0 or (self.reset_position_ids and song_start):
                    position = 0
                positions.append(position)
                position += 1
            blocks["input_ids"].append(ids)
            blocks["labels"].append([-100 if p == 0 else token for token, p in zip(ids, positions)])
            blocks["position_ids"].append(positions)
        del self.ids[:full], self.song_starts[:full]
        return blocks


def packer_per_pass(block_size: int, reset_position_ids: bool):
    """A BlockPacker for a stream's batched map (with indices): each pass over the stream (a check, then training)
    starts a fresh one, so no pass begins with what the last one left over."""
    packer = BlockPacker(block_size, reset_position_ids)

    def pack(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        nonlocal packer
        if indices and indices[0] == 0:
            packer = BlockPacker(block_size, reset_position_ids)
        return packer(batch)

    return pack


class LyricsRecipe(Recipe):
    kind = CAUSAL_LM_KIND
    unused_flags = (*CAUSAL_LM_KIND.unused_flags, "max_seq_length", "metric_names")  # blocks of block_size; loss only
    checks = (LeakageCheck(), ForgettingCheck(), FitCheck())
    name = "lyrics"
    title = "Song lyrics: causal-LM fine-tuning"
    task_args_class = LyricsArguments
    default_config = HERE / "lyrics.yaml"
    model_card_task = "text-generation"
    leakage_unit = "song"

    def load_data(self, args: RecipeArgs) -> DatasetDict:
        return load_songs(args)

    def prepare(self, args: RecipeArgs, raw: DatasetDict) -> Prepared:
        tokenizer = load_tokenizer(args.model)
        model = load_model(args.model, AutoModelForCausalLM, tokenizer)
        context = max_length(tokenizer, model, None)
        block_size = args.task.block_size or context
        if block_size > context:
            raise RecipeError(f"block_size {block_size} is larger than the model's context of {context}")
        check_room(block_size, MIN_BLOCK_SIZE, f"the model's context of {context} tokens", BLOCK_NEEDS,
                   "the model's context (n_positions)")
        if args.task.reset_position_ids:
            keep_packed_sequences_apart(model, args.training, "songs packed into blocks (reset_position_ids)",
                                        switch_off="reset_position_ids false (songs in a block then see earlier ones)")
        text, title, eos = args.data.text_column, args.task.title_column, tokenizer.eos_token_id

        def tokenize(batch):
            if title:  # the head is tokenized on its own, exactly as a title prompt is at generation time
                heads = encode(tokenizer, [title_prompt(t) for t in batch[title]])
                bodies = tokenizer(batch[text], add_special_tokens=False)["input_ids"]
                songs = [head + body for head, body in zip(heads, bodies)]
            else:
                songs = encode(tokenizer, batch[text])
            return {"tokens": [song + [eos] for song in songs]}

        blocks, dropped = DatasetDict(), {}
        with args.training.main_process_first(desc="tokenizing and packing"):
            for split, songs in raw.items():
                if isinstance(songs, IterableDataset):  # tokenized and packed as training reads it
                    read = [text, title] if title else [text]
                    blocks[split] = songs.select_columns(read).map(tokenize, batched=True, remove_columns=read).map(
                        packer_per_pass(block_size, args.task.reset_position_ids), batched=True, with_indices=True,
                        remove_columns=["tokens"])
                    continue
                tokenized = songs.map(tokenize, batched=True, remove_columns=songs.column_names,
                                      load_from_cache_file=not args.data.overwrite_cache, desc=f"Tokenizing ({split})")
                # One process, in order: the packer carries what a batch leaves over into the next
                blocks[split] = tokenized.map(
                    BlockPacker(block_size, args.task.reset_position_ids), batched=True, remove_columns=["tokens"],
                    load_from_cache_file=not args.data.overwrite_cache, desc=f"Packing ({split})")
                total = pc.sum(pc.list_value_length(tokenized.data.column("tokens"))).as_py() or 0
                dropped[split] = total - len(blocks[split]) * block_size
                if len(blocks[split]) == 0:
                    raise RecipeError(f"the {split} split has fewer tokens than one block of {block_size}; "
                                      "lower block_size or add songs")
        return Prepared(
            model=model,
            tokenizer=tokenizer,
            raw=raw,
            datasets=blocks,
            data_collator=default_data_collator,
            facts={
                "songs train/validation/test": " / ".join(str(rows_of(raw[s]) or "streamed")
                                                          for s in ("train", "validation", "test")),
                "block size": block_size,
                "tokens dropped (tail shorter than a block)": per_split(dropped),
                "songs isolated inside blocks": "yes (position ids restart per song; block-diagonal mask; a song's "
                "first token is not a target)" if args.task.reset_position_ids
                else "no (songs attend to earlier songs in the block)",
                "song text": f"the '{title}' column, a blank line, the lyrics" if title else "the lyrics",
            },
        )

    def row_unit(self, args: RecipeArgs) -> str:
        return f"packed blocks of {args.task.block_size or 'context-size'} tokens"

    def no_targets_hint(self, args: RecipeArgs) -> str:
        return "lower block_size or add songs"

    def before_training(self, trainer, prepared, args, report) -> None:
        prompts = model_prompts(args.task.prompts, args.task.title_column)
        prepared.before["generations"] = generate_text(prepared.model, prepared.tokenizer, prompts, args.task)

    def after_training(self, trainer, prepared, args, report, test_output) -> None:
        before = prepared.before["generations"]
        prompts = model_prompts(args.task.prompts, args.task.title_column)
        after = generate_text(prepared.model, prepared.tokenizer, prompts, args.task)
        rows = [{"prompt": p, "before": b, "after": a} for p, b, a in zip(args.task.prompts, before, after)]
        report.add("Generations before and after",
                   f"Decoding: {args.task.describe_decoding()}.\n\n" + markdown_table(rows))

    def prompt_format(self, task: LyricsArguments) -> PromptFormat:
        if task.title_column:  # as title_prompt(): a title, then a blank line
            return PromptFormat(template="{prompt}" + BLANK_LINE, strip=True, missing="give at least one --prompt")
        return PromptFormat(missing="give at least one --prompt")

    def model_card_example(self, args: RecipeArgs) -> CardExample:
        first = args.task.prompts[0] if args.task.prompts else "Down by the river"
        if args.task.title_column:
            how = ("Prompt with a song title followed by a blank line (`Title\\n\\n`), as every song was trained: "
                   "the model writes the lyrics.")
            prompt, comment = title_prompt(first), "  # a title, then a blank line"
        else:
            how = "Prompt with the opening words of a song: the model continues the lyrics."
            prompt, comment = first, ""
        return CardExample(
            prompt_format=how, code=f'print(generator({prompt!r})[0]["generated_text"]){comment}',
            intended_use="Writing song lyrics in the style of the training songs, for creative and experimental use.",
            limitations="It may repeat lines, or reproduce lyrics of the training songs, which can be under "
                        "copyright.")


RECIPE = LyricsRecipe()
build_trainer = RECIPE.build_trainer
demo_config = RECIPE.demo_config  # works from any directory
run = RECIPE.run


def generate(model_dir: str | Path, prompts: Sequence[str], **settings) -> list[str]:
    """Continue each prompt with a saved lyrics model (a model trained with titles gets each prompt as a title);
    ``settings`` are GenerationArguments fields (default: the run's own)."""
    saved = load_recipe_file(model_dir)["task"]
    decoding = settings_of_run(LyricsArguments, saved, **settings)
    model, tokenizer = load_causal_lm(model_dir)
    return generate_text(model, tokenizer, model_prompts(prompts, saved.get("title_column")), decoding)
