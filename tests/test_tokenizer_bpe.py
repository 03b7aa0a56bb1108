"""The BPE trainer: known answers, equality with the straightforward reference, determinism."""

from __future__ import annotations

import random

import pytest

from tests.test_tokenizer_reference import reference_encode, reference_train
from tokenizer.bpe import learn_merges
from tokenizer.chunks import count_chunks, count_chunks_serial
from tokenizer.patterns import GPT2_HF, GPT4_HF
from tokenizer.train import tokenizer_from_merges, train_bpe


def ours(texts: list[str], pattern: str, num_merges: int) -> list[tuple[int, int]]:
    counts = count_chunks_serial(texts, pattern)
    return learn_merges(sorted((s.encode("utf-8"), c) for s, c in counts.items()), num_merges)


def random_corpus(seed: int, alphabet: list[str], n_docs: int = 30, doc_len: int = 60) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, doc_len))) for _ in range(n_docs)]


ALPHABETS = {
    "ascii_words": list("aaabbcde ") + ["the ", "and ", "'s ", "'ll "],
    "unicode": list("éèàüßøñçå ") + ["Ωμέγα ", "Привет ", "straße "],
    "emoji": ["😀", "👍🏽", "🇫🇷", "❤️", " ", "a", "👨‍👩‍👧"],
    "digits": list("0123456789 ,.") + ["2024 ", "3.14159 ", "1,000,000 "],
    "whitespace": [" ", "  ", "\t", "\n", "\n\n", "\r\n", "   x", "y ", "\u00a0", "\u3000"],
    "cjk": list("的一是不了人我在有他这中大来上国") + ["日本語 ", "한국어 ", "，", "。"],
}


def test_wikipedia_known_answer():
    # aaabdaaabac -> ZabdZabac (Z=aa) -> ZYdZYac (Y=ab: ties with (Z, a), and (97, 98) < (256, 97)) -> XdXac (X=ZY)
    merges = learn_merges([(b"aaabdaaabac", 1)], 3)
    assert merges == [(97, 97), (97, 98), (256, 257)]
    assert reference_train(["aaabdaaabac"], r".+", 3) == merges
    tok = tokenizer_from_merges(merges, r".+")
    assert tok.encode("aaabdaaabac") == [258, ord("d"), 258, ord("a"), ord("c")]


def test_counts_are_weighted_by_chunk_frequency():
    # " ab" x3 beats "cd" x2 though "cd" comes first; then (32, 97) vs (97, 98) tie at 3 -> (32, 97) is smaller
    merges = learn_merges([(b"cd", 2), (b" ab", 3)], 2)
    assert merges == [(32, 97), (256, 98)]


def test_overlapping_runs_of_one_byte():
    # "aaaaa": (a,a)=4 -> [Z Z a] (left to right); (Z,Z)=1 and (Z,a)=1 tie -> (256, 97) < (256, 256) -> [Z Y]
    expected = [(97, 97), (256, 97), (256, 257)]
    assert learn_merges([(b"aaaaa", 1)], 3) == reference_train(["aaaaa"], r".+", 3) == expected


@pytest.mark.parametrize("name", sorted(ALPHABETS))
@pytest.mark.parametrize("pattern", [GPT2_HF, GPT4_HF], ids=["gpt2", "gpt4"])
def test_equals_reference_on_small_corpora(name, pattern):
    texts = random_corpus(sorted(ALPHABETS).index(name), ALPHABETS[name])
    expected = reference_train(texts, pattern, 120)
    got = ours(texts, pattern, 120)
    assert len(got) > 20
    assert got == expected


def test_equals_reference_on_mixed_corpus_until_pairs_run_out():
    alphabet = [s for a in ALPHABETS.values() for s in a]
    texts = random_corpus(7, alphabet, n_docs=15, doc_len=25)
    expected = reference_train(texts, GPT2_HF, 10_000)  # far more than there are pairs: both must stop
    got = ours(texts, GPT2_HF, 10_000)
    assert got == expected
    assert len(got) < 10_000


def test_equals_reference_on_real_text(corpus_text):
    text = corpus_text[:12_000]
    texts = text.split("\n\n")
    assert ours(texts, GPT2_HF, 150) == reference_train(texts, GPT2_HF, 150)


def test_every_token_is_a_distinct_string():
    # tiktoken ranks need unique byte strings; bpe.py also guards against a merge re-spelling an existing token
    texts = ["aaa"] * 5 + ["baaa"] * 3 + ["abaa"] * 2
    merges = ours(texts, r"\S+", 50)
    assert merges == reference_train(texts, r"\S+", 50)
    tok = tokenizer_from_merges(merges, r"\S+")
    strings = [tok.decode_bytes([256 + i]) for i in range(len(merges))]
    assert len(strings) == len(set(strings))


def test_trained_encoding_equals_reference_encoder():
    alphabet = [s for a in ALPHABETS.values() for s in a]
    texts = random_corpus(11, alphabet, n_docs=40)
    merges = ours(texts, GPT2_HF, 300)
    tok = tokenizer_from_merges(merges, GPT2_HF)
    for s in texts + random_corpus(12, alphabet, n_docs=40):  # seen and unseen text
        assert tok.encode(s) == reference_encode(s, GPT2_HF, merges)


def test_parallel_counting_equals_serial():
    alphabet = [s for a in ALPHABETS.values() for s in a]
    texts = random_corpus(3, alphabet, n_docs=400, doc_len=400)
    assert count_chunks(texts, GPT4_HF, workers=2) == count_chunks_serial(texts, GPT4_HF)


def test_tokenizer_bytes_identical_whatever_the_workers(tmp_path, monkeypatch):
    import tokenizer.chunks

    monkeypatch.setattr(tokenizer.chunks, "BATCH_CHARS", 2000)  # many batches dealt to the workers
    alphabet = [s for a in ALPHABETS.values() for s in a]
    texts = random_corpus(5, alphabet, n_docs=300, doc_len=300)
    outs = []
    for workers in (1, 2, 3):
        tok = train_bpe(iter(texts), 700, workers=workers)
        path = tmp_path / f"w{workers}.json"
        tok.save(path)
        outs.append(path.read_bytes())
    assert outs[0] == outs[1] == outs[2]


def test_vocab_size_counts_bytes_merges_and_special():
    texts = random_corpus(1, ALPHABETS["ascii_words"], n_docs=50)
    tok = train_bpe(texts, 300, workers=1)
    assert tok.n_vocab == 300
    assert tok.eot_id == 299
    assert len(tok.mergeable_ranks) == 299


def test_a_worker_error_is_raised_not_hung():
    with pytest.raises(Exception, match="missing"):
        count_chunks(["abc"] * 10, r"(unclosed", workers=2)


def test_a_dead_worker_is_reported_not_hung(monkeypatch):
    import os

    import tokenizer.chunks

    monkeypatch.setattr(tokenizer.chunks, "_worker", lambda *args: os._exit(3))
    with pytest.raises(RuntimeError, match="exit code 3"):
        count_chunks(["abc"] * 10, GPT2_HF, workers=2)


def test_lone_surrogates_in_training_text_count_as_replacement_characters():
    tok = train_bpe(["!\ud800! !\ud800! !\ud800!"], 300, workers=1)  # one punctuation chunk: ! U+D800 !
    assert tok.decode(tok.encode("!\ud800!")) == "!\ufffd!"
    assert len(tok.encode("!\ufffd!")) == 1  # learned from the replaced text: bytes 21 EF BF BD 21


def test_progress_reports_both_phases():
    import io

    from tokenizer.progress import Progress, eta, human

    assert (human(999), human(12_345), human(4_550_000), human(2e9)) == ("999", "12.3k", "4.5M", "2.0G")
    assert eta(0, 10, 1.0) == "?" and eta(5, 10, 30.0) == "0:30" and eta(1, 61, 1.0) == "1:00"
    stream = io.StringIO()
    train_bpe(random_corpus(2, ALPHABETS["ascii_words"], n_docs=100), 400, workers=1,
              progress=Progress(stream, interval=0))
    out = stream.getvalue()
    assert "split:" in out and "chars read" in out and "distinct" in out
    assert "merges:" in out and "/s" in out and "ETA" in out


@pytest.mark.parametrize("pattern", [GPT2_HF, GPT4_HF], ids=["gpt2", "gpt4"])
def test_cutting_long_documents_keeps_every_chunk(pattern):
    import regex

    from tokenizer.chunks import segments

    rng = random.Random(9)
    pieces = [" ", "\n", "\n\n", "\t", "\r\n", "  \n", "\u00a0", "\x0b", "\x1c", "\u2028", "\x85", "'s", "!", "1",
              "a", "日", "😀", " x", "x\n", "\ny"]
    docs = ["".join(rng.choice(pieces) for _ in range(3000)) for _ in range(20)]
    pat = regex.compile(pattern)
    for doc in docs:
        for size in (1, 10, 500):
            cut = list(segments(doc, size))
            assert "".join(cut) == doc
            assert [c for s in cut for c in pat.findall(s)] == pat.findall(doc)
        assert len(list(segments(doc, 10))) > 10  # it did cut


def test_long_document_counts_equal_whole_document_counts(monkeypatch):
    import tokenizer.chunks

    doc = "\n".join(random_corpus(4, [s for a in ALPHABETS.values() for s in a], n_docs=300, doc_len=40))
    whole = count_chunks_serial([doc], GPT2_HF)
    monkeypatch.setattr(tokenizer.chunks, "SEGMENT_CHARS", 100)
    assert len(list(tokenizer.chunks.segments(doc))) > 20
    assert count_chunks_serial([doc], GPT2_HF) == whole
    assert count_chunks([doc], GPT2_HF, workers=2) == whole
