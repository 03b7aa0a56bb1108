"""Plain document texts in file order, for training a tokenizer (train_tokenizer.py)."""

from __future__ import annotations

from collections.abc import Iterator

from gpt2stream.config import DataConfig
from gpt2stream.data.mixdocs import MixtureDocuments
from gpt2stream.data.open import open_source
from gpt2stream.data.sources import usable


class DocumentIterator:
    """Iterator over the usable training texts (validation rows excluded), in file order.

    ``skipped`` counts empty / None / non-string texts passed over so far; ``chars`` the characters yielded.
    With ``max_chars`` the last document is cut so the total is exactly ``max_chars``.
    """

    def __init__(self, data_cfg: DataConfig, max_docs: int | None = None, max_chars: int | None = None) -> None:
        self.cfg = data_cfg
        self.max_docs = max_docs
        self.max_chars = max_chars
        self.skipped = 0
        self.docs = 0
        self.chars = 0
        self._gen = self._run()

    def _run(self) -> Iterator[str]:
        if self.max_docs == 0 or self.max_chars == 0:
            return
        source = open_source(self.cfg)
        plan = source.plan(self.cfg.val_docs, 1)
        for unit in plan.units:
            for row in source.read_unit(unit):
                if not usable(row.text):
                    self.skipped += 1
                    continue
                text = row.text
                if self.max_chars is not None and self.chars + len(text) >= self.max_chars:
                    text = text[: self.max_chars - self.chars]
                self.docs += 1
                self.chars += len(text)
                yield text
                if self.docs == self.max_docs or self.chars == self.max_chars:
                    return

    def __iter__(self) -> DocumentIterator:
        return self

    def __next__(self) -> str:
        return next(self._gen)


def iter_documents(data_cfg: DataConfig, max_docs: int | None = None, max_chars: int | None = None
                   ) -> DocumentIterator | MixtureDocuments:
    """Texts from the same sources as training (Hub or local), skipping unusable ones with a count (``.skipped``);
    a mixture's sources interleaved by weight (mixdocs.py)."""
    if data_cfg.mixture:
        return MixtureDocuments(data_cfg, max_docs, max_chars)
    return DocumentIterator(data_cfg, max_docs, max_chars)
