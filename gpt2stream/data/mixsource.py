"""The opened sources of a weighted mixture (data/mixture.py), as one object the job, the loader and validation pass
around in place of a single Source."""

from __future__ import annotations

from gpt2stream.data.mixture import MixEntry
from gpt2stream.data.sources.base import FileRef, Source


class MixtureSource:
    """``sources[i]`` is ``entries[i]`` opened (each with ``entries[i].data_cfg(run)``), in the mixture's order."""

    kind = "mixture"

    def __init__(self, entries: tuple[MixEntry, ...], sources: list[Source]) -> None:
        if len(entries) != len(sources):
            raise ValueError(f"{len(entries)} mixture entries but {len(sources)} opened sources")
        self.entries = entries
        self.sources = sources

    @property
    def revision(self) -> str:
        """"": each Hub source has its own pinned revision (``sources[i].revision``)."""
        return ""

    @property
    def files(self) -> list[FileRef]:
        """Every source's files, in the mixture's order."""
        return [f for s in self.sources for f in s.files]

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    @property
    def weights(self) -> list[float]:
        return [e.weight for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)
