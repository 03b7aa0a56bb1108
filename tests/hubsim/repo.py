"""One revision of a served repo: its files, their digests, its sha, and the API's views of it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path


class _Repo:
    def __init__(self, repo_id: str, root: Path):
        self.repo_id = repo_id
        self.root = Path(root)
        self.files: dict[str, Path] = {}
        self.digests: dict[str, str] = {}
        for p in sorted(self.root.rglob("*")):
            if p.is_file():
                rel = p.relative_to(self.root).as_posix()
                self.files[rel] = p
                self.digests[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        h = hashlib.sha1(repo_id.encode())
        for rel in self.files:
            h.update(rel.encode() + b"\0" + self.digests[rel].encode())
        self.sha = h.hexdigest()

    def dirs(self) -> set[str]:
        out = set()
        for rel in self.files:
            parts = rel.split("/")[:-1]
            for k in range(1, len(parts) + 1):
                out.add("/".join(parts[:k]))
        return out

    def entry(self, rel: str) -> dict:
        if rel in self.files:
            size = self.files[rel].stat().st_size
            e = {"type": "file", "oid": hashlib.sha1(self.digests[rel].encode()).hexdigest(), "size": size,
                 "path": rel}
            if rel.endswith(".parquet"):
                e["lfs"] = {"oid": self.digests[rel], "size": size, "pointerSize": 134}
            return e
        return {"type": "directory", "oid": hashlib.sha1(rel.encode()).hexdigest(), "size": 0, "path": rel}

    def card_data(self) -> dict:
        import yaml

        readme = self.files.get("README.md")
        if readme is None:
            return {}
        text = readme.read_text(encoding="utf-8")
        m = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.S)
        return (yaml.safe_load(m.group(1)) or {}) if m else {}

    def info(self) -> dict:
        return {
            "_id": hashlib.sha1(self.repo_id.encode()).hexdigest()[:24], "id": self.repo_id,
            "author": self.repo_id.split("/")[0], "sha": self.sha, "lastModified": "2025-01-01T00:00:00.000Z",
            "private": False, "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "cardData": self.card_data(), "siblings": [{"rfilename": r} for r in self.files],
            "createdAt": "2024-01-01T00:00:00.000Z", "usedStorage": sum(p.stat().st_size for p in self.files.values()),
        }

