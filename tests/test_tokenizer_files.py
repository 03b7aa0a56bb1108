"""tokenizer.json loading: ours and HF's GPT-2-style files load; corrupt or foreign ones give one TokenizerError."""

from __future__ import annotations

import json

import pytest
import tokenizers
from tokenizers import models, pre_tokenizers

from tokenizer import Tokenizer, load_tokenizer
from tokenizer.errors import TokenizerError
from tokenizer.hf_json import recover_merge
from tokenizer.train import train_bpe

TEXTS = ["the cat sat on the mat; the dog didn't, 12345 times!"] * 5 + ["日本語 😀 naïve café\n\n  x"] * 3


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("files") / "tokenizer.json"
    train_bpe(TEXTS, 320, workers=1).save(path)
    return path


def edited(saved, tmp_path, edit) -> str:
    doc = json.loads(saved.read_text(encoding="utf-8"))
    edit(doc)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return str(path)


def assert_user_error(path, *words):
    with pytest.raises(TokenizerError) as info:
        load_tokenizer(str(path))
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    for w in words:
        assert w in msg, msg


def test_recover_merge_docstring_example():
    ranks = {b"a": 0, b"b": 1, b"c": 2, b"ab": 3, b"abc": 4}
    assert recover_merge(ranks, b"abc") == (b"ab", b"c")
    assert recover_merge({b"a": 0, b"b": 1, b"c": 2, b"abc": 3}, b"abc") is None


def test_missing_file(tmp_path):
    assert_user_error(tmp_path / "nope.json", "does not exist")


def test_directory_names_the_file_inside(saved, tmp_path):
    """--tokenizer runs/x or an exported HF directory: point at its tokenizer.json instead of 'Is a directory'."""
    assert_user_error(tmp_path, "is a directory", "path of a tokenizer.json")
    (tmp_path / "tokenizer.json").write_bytes(saved.read_bytes())
    assert_user_error(tmp_path, "is a directory", f"give the file: {tmp_path / 'tokenizer.json'}")


def test_truncated_file(saved, tmp_path):
    bad = tmp_path / "truncated.json"
    bad.write_bytes(saved.read_bytes()[: len(saved.read_bytes()) // 2])
    assert_user_error(bad, "not valid JSON")


def test_binary_garbage(tmp_path):
    bad = tmp_path / "garbage.json"
    bad.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(TokenizerError):
        load_tokenizer(str(bad))


def test_foreign_wordpiece_file(tmp_path):
    vocab = {"[UNK]": 0, "[CLS]": 1, "hello": 2, "world": 3, "##s": 4}
    hf = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    path = tmp_path / "bert.json"
    hf.save(str(path))
    assert_user_error(path, "not BPE")


def test_foreign_char_level_bpe(tmp_path):
    hf = tokenizers.Tokenizer(models.BPE({"a": 0, "b": 1, "ab": 2, "<|endoftext|>": 3}, [("a", "b")]))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "charbpe.json"
    hf.save(str(path))
    assert_user_error(path, "pre_tokenizer")


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: d.update(added_tokens=[]), ["<|endoftext|>"]),
        (lambda d: d["model"]["merges"].reverse(), ["merge"]),
        (lambda d: d["model"]["merges"].pop(), ["merges"]),
        (lambda d: d["model"]["vocab"].pop("Ā"), ["256 byte tokens"]),
        (lambda d: d["model"].update(type="Unigram"), ["not BPE"]),
        (lambda d: d["pre_tokenizer"]["pretokenizers"][1].update(use_regex=True), ["ByteLevel"]),
        (lambda d: d["model"]["vocab"].update({"€": 9999}), ["byte-level alphabet"]),
        (lambda d: d.update(model=None), ["not BPE"]),
    ],
    ids=["no-eot", "merge-order", "missing-merge", "missing-byte", "unigram", "double-bytelevel", "alphabet", "null"],
)
def test_foreign_or_damaged_files(saved, tmp_path, edit, words):
    assert_user_error(edited(saved, tmp_path, edit), "not a byte-level BPE tokenizer.json", *words)


def test_hf_gpt2_style_bytelevel_file_loads(saved, tmp_path):
    """HF's own GPT-2 layout (pre_tokenizer ByteLevel with its built-in GPT-2 regex) is the same tokenizer."""
    path = edited(saved, tmp_path, lambda d: d.update(
        pre_tokenizer={"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}))
    ours, theirs = Tokenizer.from_file(saved), Tokenizer.from_file(path)
    hf = tokenizers.Tokenizer.from_file(path)
    assert theirs.identity == ours.identity
    for s in TEXTS + ["  spaces   and\n\nnewlines ", "don't 123 4567"]:
        assert theirs.encode(s) == ours.encode(s) == hf.encode(s).ids


def test_merges_as_space_separated_strings_load(saved, tmp_path):
    """Older HF files write merges as "a b" strings."""
    path = edited(saved, tmp_path, lambda d: d["model"].update(merges=[" ".join(m) for m in d["model"]["merges"]]))
    assert Tokenizer.from_file(path).mergeable_ranks == Tokenizer.from_file(saved).mergeable_ranks


def test_save_into_missing_directory_is_a_user_error(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        train_bpe(TEXTS, 300, workers=1).save(tmp_path / "missing" / "t.json")
    assert not (tmp_path / "missing").exists()


def test_save_replaces_atomically(saved, tmp_path):
    target = tmp_path / "t.json"
    target.write_text("old", encoding="utf-8")
    Tokenizer.from_file(saved).save(target)
    assert Tokenizer.from_file(target).identity == Tokenizer.from_file(saved).identity
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temp files left behind
