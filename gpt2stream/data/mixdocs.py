"""Plain document texts of a weighted mixture, interleaved by weight, for training a tokenizer on the mixture it
will tokenize (train_tokenizer.py --data mix.yaml).

Each source yields its usable texts in file order (its own text column), from the first document. The next document
always comes from the source furthest below its share so far (characters read / weight, ties to the earlier
source): deterministic, and the characters of any prefix follow the weights within one document per source. A
source that runs out starts again, as training repeats it (a new epoch), unless its ``max_epochs`` is reached:
then it is dropped and the others share its weight. The mixture ends when every source has been read once (or
dropped), or at ``max_docs`` / ``max_chars``.
"""

from __future__ import annotations

from collections.abc import Iterator

from gpt2stream.config import DataConfig
from gpt2stream.data.mixture import MixEntry, entries, source_error
from gpt2stream.data.open import open_source
from gpt2stream.data.sources import Source, usable
from gpt2stream.errors import UserError


def _open(e: MixEntry, cfg: DataConfig) -> Source:
    try:
        src = open_source(e.data_cfg(cfg))
        src.plan(0, 1)  # a missing text column or an empty source is found now, naming the source
        return src
    except UserError as err:
        raise source_error(e, err) from None


class MixtureDocuments:
    """Iterator over the mixture's texts, interleaved by weight; counts as DocumentIterator's, plus per source
    (``chars_by`` / ``docs_by``: {name: n}) and ``epochs_by`` (passes started over each source)."""

    def __init__(self, data_cfg: DataConfig, max_docs: int | None = None, max_chars: int | None = None) -> None:
        self.mix = entries(data_cfg)
        self.cfg = data_cfg
        self.max_docs, self.max_chars = max_docs, max_chars
        self.skipped = self.docs = self.chars = 0
        self.docs_by = {e.name: 0 for e in self.mix}
        self.chars_by = {e.name: 0 for e in self.mix}
        self.epochs_by = {e.name: 0 for e in self.mix}
        self._gen = self._run()

    def _texts(self, src: Source, name: str) -> Iterator[str]:
        """One pass over a source's usable texts (unusable ones counted)."""
        self.epochs_by[name] += 1
        for unit in src.plan(0, 1).units:
            for row in src.read_unit(unit):
                if usable(row.text):
                    yield row.text
                else:
                    self.skipped += 1

    def _run(self) -> Iterator[str]:
        if self.max_docs == 0 or self.max_chars == 0:
            return
        sources = {e.name: _open(e, self.cfg) for e in self.mix}
        live = {e.name: (e, self._texts(sources[e.name], e.name)) for e in self.mix}
        read_once: set[str] = set()
        while live and len(read_once) < len(self.mix):
            name = min(live, key=lambda n: self.chars_by[n] / live[n][0].weight)  # dict order: ties to the earlier
            e, texts = live[name]
            text = next(texts, None)
            if text is None:  # this pass is over: the next one, as training would, unless max_epochs says stop
                read_once.add(name)
                if (e.max_epochs and self.epochs_by[name] >= e.max_epochs) or not self.docs_by[name]:
                    del live[name]
                else:
                    live[name] = (e, self._texts(sources[name], name))
                continue
            if self.max_chars is not None and self.chars + len(text) >= self.max_chars:
                text = text[: self.max_chars - self.chars]
            self.docs += 1
            self.chars += len(text)
            self.docs_by[name] += 1
            self.chars_by[name] += len(text)
            yield text
            if self.docs == self.max_docs or self.chars == self.max_chars:
                return

    def shares(self) -> str:
        """Each source's share of the characters read, e.g. ``web 50.0%, code 30.0%``."""
        total = max(1, self.chars)
        return ", ".join(f"{n} {100 * c / total:.1f}%" for n, c in self.chars_by.items())

    def __iter__(self) -> MixtureDocuments:
        return self

    def __next__(self) -> str:
        return next(self._gen)
