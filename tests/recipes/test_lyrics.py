import json
import math
from pathlib import Path

import pytest
import torch
from datasets import IterableDataset

from hf_recipes import cli
from hf_recipes.errors import RecipeError
from hf_recipes.generation import GenerationArguments, generate as generate_text, load_causal_lm
from hf_recipes.recipes import lyrics
from hf_recipes.recipes.lyrics import BlockPacker, read_songs, split_songs
from tests.conftest import needs_shared, SAMPLES, SHARED_DATA

SONGS = SAMPLES / "lyrics" / "songs.txt"


@pytest.fixture
def overrides(tiny_model_args):
    return {**tiny_model_args, "train_file": str(SONGS), "block_size": 64, "num_train_epochs": 1,
            "max_new_tokens": 8, "prompts": ["Down by", "My true"], "eval_strategy": "epoch"}


def test_songs_split_at_blank_lines_or_a_chosen_separator(tmp_path):
    assert split_songs("a\nb\n\nc\n  \t\nd\n\n\n", "\n\n") == ["a\nb", "c", "d"]
    assert split_songs("a\n%%\nb\n%%\n", "%%") == ["a", "b"]
    (tmp_path / "2.txt").write_text("second\nsong\n")
    (tmp_path / "1.txt").write_text("first\n\nsong\n")
    (tmp_path / "notes.md").write_text("not a song")
    assert read_songs(str(tmp_path), "\n\n") == ["first\n\nsong", "second\nsong"]


def pack(songs: list[list[int]], block_size: int, reset_position_ids: bool, batches: list[int]) -> dict:
    """The packer called as a batched map calls it: on the songs in batches of the given sizes, outputs joined."""
    packer, packed, start = BlockPacker(block_size, reset_position_ids), {}, 0
    for size in batches:
        for key, rows in packer({"tokens": songs[start : start + size]}).items():
            packed.setdefault(key, []).extend(rows)
        start += size
    return {**packed, "left over": len(packer.ids)}


@pytest.mark.parametrize("batches", [[3], [1, 1, 1], [2, 1], [1, 2]])
def test_packing_keeps_every_token_in_order_and_restarts_positions_across_batches(batches):
    eos = 0
    songs = [[1, 2, eos], [3, 4, 5, eos], [6, eos]]
    packed = pack(songs, block_size=4, reset_position_ids=True, batches=batches)
    assert packed["input_ids"] == [[1, 2, 0, 3], [4, 5, 0, 6]]
    # song 2 starts at 0 in block 1 and restarts at 0 again where it continues in block 2
    assert packed["position_ids"] == [[0, 1, 2, 0], [0, 1, 2, 0]]
    # the first token of every sequence (song start, or a song's continuation in a new block) is not a target
    assert packed["labels"] == [[-100, 2, 0, -100], [-100, 5, 0, -100]]
    assert packed["left over"] == 1  # the tail after the last song, dropped
    plain = pack(songs, block_size=4, reset_position_ids=False, batches=batches)
    assert plain["position_ids"] == [[0, 1, 2, 3], [0, 1, 2, 3]]
    assert plain["labels"] == [[-100, 2, 0, 3], [-100, 5, 0, 6]]  # one sequence per block, as run_clm


def test_blocks_are_the_songs_plus_eos_up_to_the_dropped_tail(overrides):
    _, prepared = lyrics.build_trainer(**overrides)
    tokenizer, eos = prepared.tokenizer, prepared.tokenizer.eos_token_id
    for split in ("train", "validation", "test"):
        stream = [t for song in prepared.raw[split]["text"] for t in tokenizer(song)["input_ids"] + [eos]]
        blocks = prepared.datasets[split]
        packed = [t for ids in blocks["input_ids"] for t in ids]
        assert all(len(ids) == 64 for ids in blocks["input_ids"])
        assert len(stream) - len(packed) < 64
        assert packed == stream[: len(packed)]
        for ids, labels, positions in zip(blocks["input_ids"], blocks["labels"], blocks["position_ids"]):
            assert labels == [-100 if p == 0 else t for t, p in zip(ids, positions)]
        assert packed.count(eos) == sum(1 for t in stream[: len(packed)] if t == eos)
        assert stream.count(eos) == len(prepared.raw[split])  # exactly one EOS per song
    assert "attention_mask" not in prepared.datasets["train"].column_names  # no padding anywhere


def test_split_is_by_song_disjoint_and_reproducible(overrides):
    _, first = lyrics.build_trainer(**overrides)
    _, second = lyrics.build_trainer(**overrides)
    splits = {s: set(first.raw[s]["text"]) for s in ("train", "validation", "test")}
    assert not splits["train"] & splits["validation"] and not splits["train"] & splits["test"]
    assert not splits["validation"] & splits["test"]
    assert sum(map(len, splits.values())) == len(split_songs(SONGS.read_text(), "\n\n"))
    assert all(list(first.raw[s]["text"]) == list(second.raw[s]["text"]) for s in splits)


def test_songs_in_one_block_do_not_attend_to_each_other(overrides):
    _, prepared = lyrics.build_trainer(**overrides)
    model = prepared.model.eval()
    block = next(b for b in prepared.datasets["train"] if 0 in b["position_ids"][1:])  # holds a song start
    positions = block["position_ids"]
    start = positions.index(0, 1)
    with torch.no_grad():
        in_block = model(input_ids=torch.tensor([block["input_ids"]]),
                         position_ids=torch.tensor([positions])).logits[0, start:]
        alone = model(input_ids=torch.tensor([block["input_ids"][start:]])).logits[0]
    torch.testing.assert_close(in_block, alone, rtol=1e-4, atol=1e-4)


def song_pieces(blocks) -> list[list[int]]:
    """The sequences of packed blocks: runs of tokens whose position ids count up from 0."""
    pieces = []
    for ids, positions in zip(blocks["input_ids"], blocks["position_ids"]):
        starts = [i for i, p in enumerate(positions) if p == 0] + [len(ids)]
        pieces += [ids[a:b] for a, b in zip(starts, starts[1:])]
    return pieces


@pytest.mark.slow
def test_perplexity_counts_only_targets_within_a_song(overrides):
    trainer, prepared = lyrics.build_trainer(**overrides)
    eos, model = prepared.tokenizer.eos_token_id, prepared.model.eval()
    pieces = song_pieces(prepared.datasets["validation"])
    assert all(eos not in piece[:-1] for piece in pieces)  # a piece never reaches into the next song
    assert sum(piece[-1] == eos for piece in pieces) > 1  # several songs, so song boundaries are tested
    total, targets = 0.0, 0
    with torch.no_grad():
        for piece in pieces:  # each song piece alone: token i + 1 predicted from tokens 0..i of the same piece
            logits = model(input_ids=torch.tensor([piece])).logits[0, :-1]
            total += torch.nn.functional.cross_entropy(logits, torch.tensor(piece[1:]), reduction="sum").item()
            targets += len(piece) - 1
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] == pytest.approx(total / targets, rel=1e-5)


def test_block_size_beyond_the_context_is_an_error(overrides):
    with pytest.raises(RecipeError, match="block_size 512 is larger than the model's context of 128"):
        lyrics.build_trainer(**{**overrides, "block_size": 512})


@pytest.mark.slow
def test_run_reports_perplexity_and_generation_reloads_reproducibly(overrides, capsys):
    metrics = lyrics.run(**overrides)
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    assert metrics["test_perplexity"] == pytest.approx(math.exp(metrics["test_loss"]))
    assert metrics["train_real_token_share"] == 1.0
    out = Path(overrides["output_dir"])
    report = (out / "report.md").read_text()
    assert "Validation loss before and after fine-tuning" in report and "Generations before and after" in report
    assert "- loss: fused LM-head cross-entropy" in report
    assert json.loads((out / "recipe.json").read_text())["recipe"] == "lyrics"

    first = lyrics.generate(out, ["Down by the"], max_new_tokens=12, generation_seed=7)
    again = lyrics.generate(out, ["Down by the"], max_new_tokens=12, generation_seed=7)
    assert first == again and len(first) == 1
    capsys.readouterr()
    assert cli.main(["generate", "--model_dir", str(out), "--prompt", "Down by the", "--max_new_tokens", "12",
                     "--seed", "7"]) == 0
    assert capsys.readouterr().out.strip() == ("Down by the" + first[0]).strip()

    # generating before training does not change how the run trains: build_trainer() + train() gives the same model
    trainer, _ = lyrics.build_trainer(**{**overrides, "output_dir": str(out.parent / "plain")})
    trainer.train()
    assert trainer.evaluate()["eval_loss"] == pytest.approx(metrics["eval_loss"], abs=1e-6)


@needs_shared
def test_real_songs_split_by_song_and_pack_with_their_titles(overrides):
    _, prepared = lyrics.build_trainer(**{
        **overrides, "train_file": str(SHARED_DATA / "lyrics" / "songs.jsonl"), "title_column": "title",
        "tokenizer_name": str(SHARED_DATA / "gpt2_tokenizer"), "max_train_samples": 200,
    })
    raw, tokenizer = prepared.raw, prepared.tokenizer
    assert {s: len(raw[s]) for s in raw} == {"train": 200, "validation": 217, "test": 217}  # 10% each of 2,173
    songs = {s: {(r["book"], r["title"], r["text"]) for r in raw[s]} for s in raw}
    assert not songs["train"] & songs["test"] and not songs["train"] & songs["validation"]
    assert not songs["validation"] & songs["test"]
    first = prepared.datasets["train"][0]
    head = tokenizer(lyrics.title_prompt(raw["train"][0]["title"]))["input_ids"]
    assert first["input_ids"][: len(head)] == head and first["labels"][0] == -100
    assert all(len(ids) == 64 for ids in prepared.datasets["train"]["input_ids"])


def test_packed_songs_refuse_a_cache_that_would_let_them_attend_to_each_other(overrides):
    _, prepared = lyrics.build_trainer(**overrides)
    model = prepared.model.eval()
    block = next(b for b in prepared.datasets["validation"] if 0 in b["position_ids"][1:])
    inputs = {"input_ids": torch.tensor([block["input_ids"]]), "position_ids": torch.tensor([block["position_ids"]])}
    with torch.no_grad():
        apart, mixed = model(**inputs).logits, model(**inputs, use_cache=True).logits
    assert model.config.use_cache is False
    assert (apart - mixed).abs().max() > 1e-3  # why: with a cache transformers does not see the packed songs
    with pytest.raises(RecipeError, match="use_cache must be off with songs packed into blocks"):
        lyrics.build_trainer(**{**overrides, "use_cache": True})
    lyrics.build_trainer(**{**overrides, "use_cache": True, "reset_position_ids": False})  # one sequence per block


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_validation_and_test_are_shares_of_all_songs_and_max_test_samples_applies(overrides, tmp_path, suffix):
    songs = [f"song {i} line one\nsong {i} line two" for i in range(100)]
    path = tmp_path / f"songs{suffix}"
    path.write_text("\n\n".join(songs) if suffix == ".txt" else "".join(json.dumps({"text": s}) + "\n" for s in songs))
    args = lyrics.RECIPE.parse(None, [], **{**overrides, "train_file": str(path), "validation_split_percentage": 10,
                                            "test_split_percentage": 10})
    raw = lyrics.RECIPE.load_data(args)
    assert {s: len(raw[s]) for s in raw} == {"train": 80, "validation": 10, "test": 10}
    assert sorted(t for s in raw for t in raw[s]["text"]) == sorted(songs)
    args.data.max_test_samples = 3
    assert len(lyrics.RECIPE.load_data(args)["test"]) == 3


@pytest.fixture
def titled_songs(tmp_path):
    """The bundled songs as JSON lines with a title each."""
    path = tmp_path / "titled.jsonl"
    songs = split_songs(SONGS.read_text(), "\n\n")
    path.write_text("".join(json.dumps({"title": f"Song {i}", "text": s}) + "\n" for i, s in enumerate(songs)))
    return path


def test_with_title_column_each_song_is_its_title_a_blank_line_and_its_lyrics(overrides, titled_songs):
    _, prepared = lyrics.build_trainer(**{**overrides, "train_file": str(titled_songs), "title_column": "title"})
    tokenizer, eos = prepared.tokenizer, prepared.tokenizer.eos_token_id
    train = prepared.raw["train"]
    # the title head is tokenized exactly as a title prompt is at generation time
    songs = [tokenizer(lyrics.title_prompt(t))["input_ids"] + tokenizer(x)["input_ids"] + [eos]
             for t, x in zip(train["title"], train["text"])]
    assert tokenizer.decode(songs[0]) == f"{train['title'][0]}\n\n{train['text'][0]}{tokenizer.eos_token}"
    stream = [t for song in songs for t in song]
    packed = [t for ids in prepared.datasets["train"]["input_ids"] for t in ids]
    assert packed == stream[: len(packed)]
    assert lyrics.model_prompts(["Song 3 "], "title") == ["Song 3\n\n"] and lyrics.model_prompts(["a"], None) == ["a"]


@pytest.mark.slow
def test_a_model_trained_with_titles_writes_a_song_from_a_title(overrides, titled_songs, capsys):
    overrides = {**overrides, "train_file": str(titled_songs), "title_column": "title", "num_train_epochs": None,
                 "max_steps": 2, "prompts": ["Song 3"]}
    lyrics.run(**overrides)
    out = Path(overrides["output_dir"])
    assert json.loads((out / "recipe.json").read_text())["task"]["title_column"] == "title"
    model, tokenizer = load_causal_lm(out)
    settings = GenerationArguments(max_new_tokens=12, generation_seed=7)
    by_hand = generate_text(model, tokenizer, ["Song 3\n\n"], settings)
    assert lyrics.generate(out, ["Song 3"], max_new_tokens=12, generation_seed=7) == by_hand
    capsys.readouterr()
    assert cli.main(["generate", "--model_dir", str(out), "--prompt", "Song 3", "--max_new_tokens", "12",
                     "--seed", "7"]) == 0
    assert capsys.readouterr().out.strip() == ("Song 3\n\n" + by_hand[0]).strip()
    report = (out / "report.md").read_text()
    assert "| Song 3 |" in report and "the 'title' column, a blank line, the lyrics" in report


def test_title_column_needs_titled_data(overrides, titled_songs, tmp_path):
    with pytest.raises(RecipeError, match="title_column needs data with a title per song"):
        lyrics.build_trainer(**{**overrides, "title_column": "title"})
    with pytest.raises(RecipeError, match="column 'name' not found"):
        lyrics.build_trainer(**{**overrides, "train_file": str(titled_songs), "title_column": "name"})
    untitled = tmp_path / "untitled.jsonl"
    untitled.write_text(titled_songs.read_text().replace('"Song 1"', '""'))
    with pytest.raises(RecipeError, match="1 (train|validation|test) songs have no 'title'"):
        lyrics.build_trainer(**{**overrides, "train_file": str(untitled), "title_column": "title"})


@pytest.fixture
def song_files(tmp_path):
    """The sample songs as train / validation / test jsonl files, one song per row."""
    songs = read_songs(str(SONGS), "\n\n")
    parts = {"train": songs[:-8], "validation": songs[-8:-4], "test": songs[-4:]}
    files = {}
    for split, rows in parts.items():
        files[f"{split}_file"] = str(tmp_path / f"{split}.jsonl")
        Path(files[f"{split}_file"]).write_text("".join(json.dumps({"text": song}) + "\n" for song in rows))
    return files


def test_streamed_songs_pack_into_the_same_first_blocks(overrides, song_files):
    settings = {**overrides, **song_files, "max_steps": 2}
    _, whole = lyrics.build_trainer(**settings)
    _, streamed = lyrics.build_trainer(**{**settings, "streaming": True,
                                          "output_dir": str(Path(settings["output_dir"]).parent / "streamed")})
    assert isinstance(streamed.datasets["train"], IterableDataset)
    first = list(streamed.datasets["train"].take(5))
    assert len(first) == 5
    for row, block in zip(range(5), first):
        for column in ("input_ids", "labels", "position_ids"):
            assert block[column] == whole.datasets["train"][row][column]
    # validation and test are held whole: their own files here, fewer rows than the default cap
    assert streamed.datasets["validation"]["input_ids"] == whole.datasets["validation"]["input_ids"]


def test_streamed_run_trains_evaluates_and_reports_its_samples(overrides):
    settings = {**overrides, "streaming": True, "max_steps": 3, "max_eval_samples": 5, "max_test_samples": 4}
    metrics = lyrics.run(**settings)
    out = Path(settings["output_dir"])
    assert metrics["train_loss"] > 0 and math.isfinite(metrics["eval_loss"]) and math.isfinite(metrics["test_loss"])
    songs = read_songs(str(SONGS), "\n\n")
    found = json.loads((out / "checks.json").read_text())
    # test is the head of the stream, validation the next rows, train the rest; the screen reads the train head
    assert found["leakage"]["overlaps"]["test"]["rows"] == 4 and found["leakage"]["overlaps"]["validation"]["rows"] == 5
    assert found["leakage"]["streamed_train_sample"] == found["leakage"]["train_rows"] == len(songs) - 9
    report = (out / "report.md").read_text()
    assert f"the screen read its first {len(songs) - 9} rows only" in report
    assert "train/validation/test: streamed /" in report
    trained_steps = json.loads((out / "trainer_state.json").read_text())["global_step"]
    assert trained_steps == 3


def test_streaming_needs_max_steps(overrides, capsys):
    out = Path(overrides["output_dir"])
    assert cli.main(["train", "lyrics", "--train_file", str(SONGS), "--streaming", "true",
                     "--output_dir", str(out), "--model_name_or_path=", *[
                         f"--{k}={v}" for k, v in overrides.items()
                         if k in ("model_type", "config_overrides", "tokenizer_name")]]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == ("error: --streaming true needs --max_steps: a streamed train split has no "
                                            "length to count epochs by")
    assert not out.exists()
