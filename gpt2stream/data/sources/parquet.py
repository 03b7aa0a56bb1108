"""Parquet files (local or on the Hub): a unit is one row group, read with only the text and id columns."""

from __future__ import annotations

from gpt2stream.data.sources.base import HandleCache, Plan, Row, Source, Unit, doc_key
from gpt2stream.errors import UserError


class ParquetSource(Source):
    """Parquet files; a unit is one row group. Footers are read once (when planning) and travel with the source
    to the workers, so a worker's only requests are for the column chunks of its own row groups."""

    kind = "parquet"

    def _meta(self, i: int):
        """The file's parquet metadata (footer), checked for the text column; cached."""
        metas = self.__dict__.setdefault("metas", {})
        if i not in metas:
            import pyarrow.parquet as pq

            f = self.files[i]
            with f.open() as fh:
                try:
                    md = pq.ParquetFile(fh).metadata
                except UserError:
                    raise
                except Exception as e:
                    raise UserError(f"cannot read parquet file {f.name}: {e}; is it a valid parquet file?") from None
            cols = md.schema.to_arrow_schema().names
            if self.text_column not in cols:
                raise UserError(
                    f"{f.name} has no column {self.text_column!r}; its columns are {cols}; set --text-column"
                )
            metas[i] = md
        return metas[i]

    def plan(self, val_docs: int, num_readers: int = 1) -> Plan:
        units: list[Unit] = []
        last = len(self.files) - 1
        for i in range(len(self.files)):
            md = self._meta(i)
            held = val_docs if i == last else 0
            if i == last and held > md.num_rows:
                raise UserError(
                    f"val_docs={val_docs} but the last file {self.files[i].name} has only {md.num_rows} rows; "
                    f"lower --val-docs (0 = no validation set)"
                )
            for rg in range(md.num_row_groups):
                n = md.row_group(rg).num_rows
                if held >= n:
                    held -= n
                    continue
                units.append(Unit(i, rg, skip=held))
                held = 0
        return Plan(tuple(units), last if val_docs > 0 else -1, val_docs, 0)

    def _read_group(self, i: int, rg: int, skip: int, limit: int | None = None,
                    handles: HandleCache | None = None) -> list[Row]:
        import pyarrow.parquet as pq

        md = self._meta(i)
        names = md.schema.to_arrow_schema().names
        columns = [self.text_column] + ([self.id_column] if self.id_column and self.id_column in names else [])
        f = self.files[i]
        try:
            with self._handle(i, handles) as fh:
                table = pq.ParquetFile(fh, metadata=md).read_row_group(rg, columns=columns)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"cannot read row group {rg} of {f.name}: {e}") from None
        end = table.num_rows if limit is None else min(table.num_rows, skip + limit)
        table = table.slice(skip, end - skip)
        texts = table.column(self.text_column).to_pylist()
        base = f"{self.files[i].name}:{rg}:"
        values = table.column(1).to_pylist() if table.num_columns > 1 else [None] * len(texts)
        ids = [doc_key(v, base + str(skip + k)) for k, v in enumerate(values)]
        return [Row(t, d) for t, d in zip(texts, ids, strict=True)]

    def read_unit(self, unit: Unit, handles: HandleCache | None = None) -> list[Row]:
        return self._read_group(unit.file, unit.part, unit.skip, handles=handles)

    def read_val(self, plan: Plan) -> list[Row]:
        rows: list[Row] = []
        if plan.val_file < 0:
            return rows
        md = self._meta(plan.val_file)
        for rg in range(md.num_row_groups):
            if len(rows) >= plan.val_rows:
                break
            rows.extend(self._read_group(plan.val_file, rg, 0, plan.val_rows - len(rows)))
        return rows
