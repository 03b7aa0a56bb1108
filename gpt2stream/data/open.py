"""Open the source ``DataConfig.data`` names: a named source (``demo``), local files (a path, directory or glob, read
by the kind KINDS names for their extension), else a Hub dataset id. The one place that chooses between the local
sources (gpt2stream.data.sources) and the Hub (gpt2stream.data.hub), so neither imports the other's caller.
"""

from __future__ import annotations

from gpt2stream.config import DataConfig
from gpt2stream.data.mixsource import MixtureSource
from gpt2stream.data.mixture import entries
from gpt2stream.data.sources import Source, open_local
from gpt2stream.data.sources.named import named_data_path
from gpt2stream.errors import UserError


def open_mixture(data_cfg: DataConfig) -> MixtureSource:
    """Every source of the resolved mixture ``data_cfg.mixture``, opened as a run of it alone would open it."""
    mix = entries(data_cfg)
    return MixtureSource(mix, [open_source(e.data_cfg(data_cfg)) for e in mix])


def open_data(data_cfg: DataConfig) -> Source | MixtureSource:
    """The run's data: the mixture ``data_cfg.mixture`` when it has one, else the one source ``data_cfg.data``."""
    return open_mixture(data_cfg) if data_cfg.mixture else open_source(data_cfg)


def open_source(data_cfg: DataConfig) -> Source:
    """The Source named by ``data_cfg.data``: a named source, local path / directory / glob, else a Hub dataset."""
    spec = named_data_path(str(data_cfg.data)) or str(data_cfg.data)
    src = open_local(spec, data_cfg)
    if src is not None:
        if data_cfg.data_revision:  # recorded in config.json yet ignored would make the run look pinned: refuse
            raise UserError(f"--data-revision {data_cfg.data_revision!r} chooses a revision of a Hub dataset, but "
                            f"--data {data_cfg.data} is local files; drop --data-revision (local files are pinned "
                            f"by their size, time and digest in the run directory)")
        return src
    from gpt2stream.data.hub.source import HUB_READAHEAD, open_hub_source  # requests & co only when needed

    return open_hub_source(data_cfg, data_cfg.data_revision or "main", readahead=HUB_READAHEAD)
