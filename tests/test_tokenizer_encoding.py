"""Encoding: parity with HF tokenizers and tiktoken, special tokens, round trips, pickling, identity."""

from __future__ import annotations

import json
import pickle
import random

import pytest
import tokenizers

from tests.test_tokenizer_reference import reference_encode
from tokenizer import EOT, Tokenizer, load_tokenizer
from tokenizer.bpe import learn_merges
from tokenizer.chunks import count_chunks_serial
from tokenizer.core import GPT2_DIGEST, vocabulary_digest
from tokenizer.patterns import GPT2_HF
from tokenizer.train import tokenizer_from_merges, train_bpe

TEST_STRINGS = [
    "",
    "Hello world",
    "Hello, world! How's it going? I'll be there; we've done it, they're here, I'd go, I'm in.",
    "HOW'S IT GOING? IT'S DONE. We'RE",
    "   leading spaces and trailing spaces   ",
    "tabs\tand\t\tnew\nlines\n\n\nand\r\nwindows\r\n\r\nline ends",
    "a  b   c    d     e\n \n  \n   x",
    "trailing newline\n",
    "only spaces at the end     ",
    "\n\n\n",
    "     ",
    "digits 0 12 345 6789 1234567890 3.14159 1,000,000 2024-11-22 0x7fff 1e-9",
    "unicode: café naïve résumé façade Ångström Straße Ωμέγα Привет мир",
    "emoji: 😀 👍🏽 🇫🇷 ❤️ 👨‍👩‍👧‍👦 🏳️‍🌈 mixed😀text👍",
    "CJK: 日本語のテキスト 中文文本，标点。 한국어 텍스트",
    "RTL: مرحبا بالعالم שלום עולם",
    "Devanagari: नमस्ते दुनिया, combining: e\u0301 a\u0308 zero\u200bwidth joiner\u200d",
    "exotic whitespace: a\u00a0b\u2009c\u3000d\u2028e\u2029f\x0bg\x0ch\x1ci\x85j",
    "<|endoftext|> as text, and <|endoftext|><|endoftext|> twice, <|endoftext|",
    "code: def f(x):\n    return x**2  # comment\n\tif a != b: print('hi')",
    "punctuation!!! ??? ... --- *** ((())) [[]] {{}} @#$%^&*",
    "'s 's' ''s '''' \"quoted\" `tick`",
    "mixed 123abc abc123 a1b2c3 ４５６ ⅫⅣ ½ ²³",
    "\U0001f600" * 5 + "\u0000\u0001\u001f\u007f",
    "x" * 300 + " " + "ab" * 200,
]


def unicode_soup(seed: int, n: int = 40) -> list[str]:
    """Random strings over all planes (no surrogates), heavy on spaces, digits and newlines."""
    rng = random.Random(seed)
    pools = [" \n\t", "0123456789", "abcXYZ'", "".join(map(chr, range(0x80, 0x800))), "日本語한국어😀👍🏽🇫🇷"]
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randint(1, 80)):
            if rng.random() < 0.1:
                cp = rng.randint(0, 0x10FFFF)
                chars.append(chr(cp) if not 0xD800 <= cp <= 0xDFFF else "?")
            else:
                chars.append(rng.choice(rng.choice(pools)))
        out.append("".join(chars))
    return out


def training_text() -> list[str]:
    return TEST_STRINGS * 3 + unicode_soup(1, 200)


@pytest.fixture(scope="module", params=["gpt2", "gpt4"])
def trained(request, tmp_path_factory):
    """(our tokenizer, HF tokenizer loaded from the file we wrote) for a small tokenizer of each pattern."""
    tok = train_bpe(training_text(), 1200, pattern=request.param, workers=1)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(path)
    return tok, tokenizers.Tokenizer.from_file(str(path))


def test_hf_gives_the_same_ids(trained):
    tok, hf = trained
    for s in TEST_STRINGS + unicode_soup(2):
        assert hf.encode(s, add_special_tokens=False).ids == tok.encode(s, allowed_special="all"), repr(s)
        if EOT not in s:
            assert hf.encode(s).ids == tok.encode_ordinary(s), repr(s)


def test_hf_decodes_to_the_same_text(trained):
    tok, hf = trained
    for s in TEST_STRINGS:
        assert hf.decode(tok.encode(s), skip_special_tokens=False) == s


def test_file_round_trip_keeps_the_vocabulary(trained, tmp_path):
    tok, _ = trained
    tok.save(tmp_path / "a.json")
    again = Tokenizer.from_file(tmp_path / "a.json")
    assert again.mergeable_ranks == tok.mergeable_ranks
    assert again.special_tokens == tok.special_tokens
    assert again.identity == tok.identity
    assert again.name == tok.name
    again.save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_matches_pure_python_reference_encoder():
    counts = count_chunks_serial(training_text(), GPT2_HF)
    merges = learn_merges(sorted((c.encode("utf-8"), n) for c, n in counts.items()), 600)
    tok = tokenizer_from_merges(merges, GPT2_HF)  # tiktoken ranks the tokens; the reference applies the merges
    for s in TEST_STRINGS + unicode_soup(3):
        assert tok.encode_ordinary(s) == reference_encode(s, GPT2_HF, merges), repr(s)


def test_round_trip_any_valid_string(trained):
    tok, _ = trained
    for s in TEST_STRINGS + unicode_soup(4, 200):
        assert tok.decode(tok.encode(s)) == s
        assert tok.decode(tok.encode(s, allowed_special="all")) == s
        assert tok.decode_bytes(tok.encode_ordinary(s)) == s.encode("utf-8")


def test_special_token_is_text_unless_allowed(trained):
    tok, _ = trained
    s = "a<|endoftext|>b"
    assert tok.eot_id not in tok.encode(s)
    assert tok.eot_id not in tok.encode_ordinary(s)
    assert tok.encode(s, allowed_special={EOT}).count(tok.eot_id) == 1
    assert tok.encode(s, allowed_special=EOT) == tok.encode(s, allowed_special=[EOT])
    assert tok.encode(s, allowed_special="all") == tok.encode("a") + [tok.eot_id] + tok.encode("b")
    assert tok.decode([tok.eot_id]) == EOT


def test_lone_surrogates_become_replacement_characters(trained):
    tok, _ = trained
    assert tok.decode(tok.encode("a\ud800b")) == "a\ufffdb"
    assert tok.decode(tok.encode_ordinary("\udfff")) == "\ufffd"
    assert tok.encode_ordinary_batch(["x\ud800"]) == [tok.encode_ordinary("x\ufffd")]


def test_decode_of_a_cut_character_replaces_and_decode_bytes_keeps(trained):
    tok, _ = trained
    ids = tok.encode("😀")
    raw = b"".join(tok.decode_bytes([i]) for i in ids)
    assert raw == "😀".encode()
    first_byte = tok.mergeable_ranks[raw[:1]]
    assert tok.decode([first_byte]) == "\ufffd"
    assert tok.decode_bytes([first_byte]) == raw[:1]


def test_batch_equals_single(trained):
    tok, _ = trained
    texts = TEST_STRINGS + unicode_soup(5)
    assert tok.encode_ordinary_batch(texts, num_threads=2) == [tok.encode_ordinary(t) for t in texts]


def test_pickle_round_trip(trained):
    tok, _ = trained
    again = pickle.loads(pickle.dumps(tok))
    assert again.identity == tok.identity
    assert again.encode(TEST_STRINGS[2]) == tok.encode(TEST_STRINGS[2])
    gpt2 = load_tokenizer("gpt2")
    blob = pickle.dumps(gpt2)
    assert len(blob) < 2000  # by name, not 50k ranks
    assert pickle.loads(blob).encode("hello world") == [31373, 995]


def test_identity_names_the_vocabulary(trained):
    tok, _ = trained
    assert tok.identity.startswith("bpe:") and len(tok.identity) == 4 + 64
    other = train_bpe(training_text(), 1100, pattern="gpt2", workers=1)
    assert other.identity != tok.identity
    assert load_tokenizer("gpt2").identity == "tiktoken:r50k_base"


def test_gpt2_wraps_tiktoken_r50k_base(tiktoken_r50k):
    tok = load_tokenizer("gpt2")
    ref = tiktoken_r50k
    assert (tok.n_vocab, tok.eot_id) == (50257, 50256)
    for s in TEST_STRINGS:
        assert tok.encode(s) == ref.encode(s, disallowed_special=())
        assert tok.encode(s, allowed_special="all") == ref.encode(s, allowed_special="all")


@pytest.mark.slow
def test_gpt2_ranks_written_as_tokenizer_json_encode_like_tiktoken(tmp_path, corpus_text, tiktoken_r50k):
    gpt2 = load_tokenizer("gpt2")
    path = tmp_path / "gpt2.json"
    gpt2.save(path)
    ours = Tokenizer.from_file(path)
    hf = tokenizers.Tokenizer.from_file(str(path))
    assert ours.n_vocab == 50257 and ours.eot_id == 50256 and ours.name == "gpt2"
    assert ours.identity == gpt2.identity == "tiktoken:r50k_base"  # the same vocabulary, so the same identity
    assert vocabulary_digest(gpt2.pattern, gpt2.mergeable_ranks, gpt2.special_tokens) == GPT2_DIGEST
    stored = json.loads(path.read_text(encoding="utf-8"))["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    assert stored == GPT2_HF  # the classic form, which HF's regex engine reads the same way
    ref = tiktoken_r50k
    text = corpus_text[:2_000_000]
    assert ours.encode_ordinary(text) == ref.encode_ordinary(text)
    for s in TEST_STRINGS + unicode_soup(6):
        assert ours.encode(s, allowed_special="all") == ref.encode(s, allowed_special="all"), repr(s)
        assert hf.encode(s).ids == ref.encode(s, allowed_special="all"), repr(s)
    paras = text[:300_000].split("\n\n")
    assert [e.ids for e in hf.encode_batch(paras)] == ref.encode_ordinary_batch(paras)


@pytest.mark.slow
def test_transformers_fast_tokenizer_loads_our_file(trained, tmp_path):
    from transformers import PreTrainedTokenizerFast

    tok, _ = trained
    tok.save(tmp_path / "tokenizer.json")
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    for s in TEST_STRINGS[:12]:
        assert fast(s)["input_ids"] == tok.encode(s, allowed_special="all")
        assert fast.decode(tok.encode(s)) == s


@pytest.mark.slow
def test_full_size_vocabulary_on_the_corpus(corpus_dir, tmp_path):
    """Vocab 50257 on all of ../shared/corpus: HF gives our ids on every one of its 132k paragraphs."""
    files = sorted(corpus_dir.glob("*.txt"))
    docs = [f.read_text(encoding="utf-8") for f in files]
    tok = train_bpe(iter(docs), 50257, workers=2)
    tok.save(tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    paras = [p for d in docs for p in d.split("\n\n")]
    assert [e.ids for e in hf.encode_batch(paras)] == tok.encode_ordinary_batch(paras, num_threads=2)
