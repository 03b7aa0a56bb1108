"""The trainer's own saved-state pieces (``state_dict`` / ``load_state_dict``): progress and RNG states.

The model, the optimizer, the schedule, the metrics history and the loader bring their own; ``checkpoint.assemble``
puts them all in one file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Progress:
    """Optimizer steps done and the tokens they consumed."""

    step: int = 0
    tokens_seen: int = 0

    def advance(self, tokens: int) -> None:
        self.step += 1
        self.tokens_seen += tokens

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "tokens_seen": self.tokens_seen}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.step, self.tokens_seen = int(sd["step"]), int(sd["tokens_seen"])


class RNGState:
    """This process's RNG states (torch, CUDA, numpy, python) in a form weights_only loading accepts."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state(legacy=True)
        assert isinstance(np_state, tuple)  # legacy=True: (kind, keys, pos, has_gauss, gauss)
        kind, keys, pos, has_gauss, gauss = np_state
        st = {"torch": torch.get_rng_state(), "python": random.getstate(),
              "numpy": [kind, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(gauss)]}
        if self.device.type == "cuda":
            st["cuda"] = torch.cuda.get_rng_state(self.device)
        return st

    def load_state_dict(self, st: dict[str, Any]) -> None:
        torch.set_rng_state(st["torch"])
        random.setstate(st["python"])
        kind, keys, pos, has_gauss, gauss = st["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, gauss))
        if self.device.type == "cuda" and "cuda" in st:
            torch.cuda.set_rng_state(st["cuda"], self.device)


class LoaderPosition:
    """The loader's state after the last *completed* step's batches (the loader itself runs ahead by prefetching):
    saved instead of the live position, and loaded into the loader on restore."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.state = loader.state_dict()

    def mark(self) -> None:
        """The batches handed out so far belong to a completed step."""
        self.state = self.loader.state_dict()

    def state_dict(self) -> dict[str, Any]:
        return self.state

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.loader.load_state_dict(sd)
        self.state = self.loader.state_dict()
