"""One Zarr v3 group per campaign that is also its checkpoint.

Appends are transactions: every table's new rows are written first, then the root group's
``committed`` attribute (row count per table) is replaced in one atomic metadata write (Zarr's
local store writes a file by renaming a finished temporary one). Rows past ``committed`` belong
to a transaction that never finished; readers ignore them and the next writer truncates them. A
crash therefore redoes a batch, never loses or doubles one.

The root attributes also record the layout of every table (``tables``), so the store describes
itself: recipes declare their tables when they open it, and any reader can read any table.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from storage.integrity import check_chunks, checksummed, damaged_read, open_root, write_attributes

from storage.errors import StoreError
from storage.lock import StoreLock
from storage.schema import CORE_TABLES, LOCK_NAME, SCHEMA_VERSION, ZARR_NAME
from storage.v1 import V1_TABLES
from storage.tables import Column, StructureBlock, StructureTables, Table

TableRef = str | Table


def _layout_of(group: zarr.Group, directory: Path) -> dict[str, Table]:
    version = group.attrs.get("schema_version")
    if version == 1:
        return {t.name: t for t in V1_TABLES}
    if version == SCHEMA_VERSION:
        return {name: Table.from_dict(name, data) for name, data in group.attrs.get("tables", {}).items()}
    raise StoreError(f"store {directory} has schema_version {version!r}; this version reads 1 and {SCHEMA_VERSION}")


class CampaignStore:
    """Read and (under the lock) append to a campaign's store directory."""

    def __init__(self, directory: Path, group: zarr.Group, lock: StoreLock | None, layout: dict[str, Table]):
        self.directory = directory
        self._group = group
        self._lock = lock
        self._layout = layout
        self._committed: dict[str, int] = dict(group.attrs.get("committed", {}))

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | os.PathLike, checksums: bool = False) -> "CampaignStore":
        """Read-only: no lock, no writes; safe while a launch is running. Reads stores of
        schema versions 1 and 2 (a version-1 store is migrated by the next launch, not here).
        Every chunk below the committed lengths must exist; with ``checksums`` every one is also
        read once and its checksum verified (otherwise that happens when a chunk is read)."""
        directory = Path(directory)
        path = directory / ZARR_NAME
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{directory} is not a campaign store (no {ZARR_NAME} inside)")
        group = open_root(path, "r")
        store = cls(directory, group, None, _layout_of(group, directory))
        check_chunks(store._group, store._layout, store._committed, path, checksums=checksums)
        return store

    @classmethod
    def open_for_writing(cls, directory: str | os.PathLike, campaign: str,
                         tables: Sequence[Table] = ()) -> "CampaignStore":
        """Take the lock, create the store if new (or migrate a version-1 store in place),
        declare ``tables`` besides the core ones, and drop rows of any unfinished transaction."""
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise StoreError(f"store path {directory} exists and is not a directory")
        zarr_path = directory / ZARR_NAME
        if directory.is_dir() and not (zarr_path / "zarr.json").is_file():
            foreign = sorted(p.name for p in directory.iterdir() if p.name not in (LOCK_NAME, ZARR_NAME))
            if foreign:
                raise StoreError(f"{directory} is not empty and holds no campaign store ({', '.join(foreign[:5])}); "
                                 "choose another store path")
            if zarr_path.is_dir() and any(zarr_path.iterdir()):
                raise StoreError(f"store {zarr_path} is damaged: it holds data but no root metadata (zarr.json); "
                                 "it is left as it is")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            lock = StoreLock(directory / LOCK_NAME).acquire()
        except OSError as exc:
            raise StoreError(f"cannot open store {directory} for writing: {exc.strerror or exc}") from None
        try:
            group = open_root(zarr_path, "a")
            if "schema_version" in group.attrs:
                layout = _layout_of(group, directory)
                check_chunks(group, layout, dict(group.attrs.get("committed", {})), zarr_path, checksums=True)
                owner = group.attrs.get("campaign")
                if owner != campaign:
                    raise StoreError(f"store {directory} belongs to campaign {owner!r}, not {campaign!r}")
            elif any(True for _ in group.keys()):
                raise StoreError(f"{zarr_path} holds arrays but no schema_version: not a campaign store, or a "
                                 "damaged one; it is left as it is")
            else:  # new, or an empty group a killed launch created before its first commit
                layout = {}
                write_attributes(group, {"schema_version": SCHEMA_VERSION, "campaign": campaign, "committed": {},
                                    "launches": [], "tables": {}})
            store = cls(directory, group, lock, layout)
            store._migrate()
            store.declare([*CORE_TABLES, *tables])
            store._truncate_uncommitted()
            return store
        except OSError as exc:
            lock.release()
            raise StoreError(f"cannot write to store {directory}: {exc.strerror or exc}") from None
        except BaseException:
            lock.release()
            raise

    def _migrate(self) -> None:
        """Version 1 → 2: every array rewritten with checksums (so that damage is found in migrated
        stores too), then, in one attribute write, the layout (fixed in version 1) and the origin
        (recipes keep version 1's seed rules for such stores, so finished work keeps its keys)."""
        if self._group.attrs.get("schema_version") != 1:
            return
        for table in self._layout.values():
            for column in table.columns:
                self._rewrite_with_checksums(table, column, self._committed.get(table.name, 0))
        write_attributes(self._group, {"schema_version": SCHEMA_VERSION, "migrated_from": 1,
                                  "tables": {name: t.to_dict() for name, t in self._layout.items()}})

    def _rewrite_with_checksums(self, table: Table, column: Column, rows: int) -> None:
        """A version-1 column rewritten beside the old one, every chunk written (version 1 left out
        chunks of fill values only), then swapped in by renames; a migration that was interrupted
        finishes its swap here."""
        folder = self.directory / ZARR_NAME / table.group
        old, new, retired = folder / column.name, folder / f"{column.name}.migrating", folder / f"{column.name}.v1"
        if not old.exists() and new.exists():
            os.replace(new, old)
        if retired.exists():
            shutil.rmtree(retired)
        if checksummed(self._group[f"{table.group}/{column.name}"]):
            return
        if new.exists():
            shutil.rmtree(new)
        sub = self._group[table.group]
        self._create_column(sub, table, column, rows, f"{column.name}.migrating")
        source, target = sub[column.name], sub[f"{column.name}.migrating"].with_config({"write_empty_chunks": True})
        for start in range(0, rows, table.chunk_rows):
            stop = min(rows, start + table.chunk_rows)
            target[start:stop] = source[start:stop]
        os.replace(old, retired)
        os.replace(new, old)
        shutil.rmtree(retired)

    @staticmethod
    def _create_column(sub: zarr.Group, table: Table, column: Column, rows: int, name: str | None = None) -> None:
        # a checksum on every chunk: a damaged one is an error when read, never data
        sub.create_array(name or column.name, shape=(rows, *column.inner_shape),
                         chunks=(table.chunk_rows, *column.inner_shape),
                         dtype=str if column.dtype == "str" else column.dtype, fill_value=column.fill_value,
                         dimension_names=list(column.dims), compressors=(zarr.codecs.ZstdCodec(), Crc32cCodec()))

    def declare(self, tables: Iterable[Table]) -> None:
        """Make these tables (and new columns of known ones) exist; one atomic layout write."""
        layout = dict(self._layout)
        for table in tables:
            known = layout.get(table.name)
            if known is not None and known.group != table.group:
                raise StoreError(f"table {table.name!r} is stored in {known.group!r}, declared in {table.group!r}")
            sub = self._group.require_group(table.group)
            rows = self._committed.get(table.name, 0)
            columns = list(known.columns) if known is not None else []
            for column in table.columns:
                if known is not None and column.name in known.names:
                    continue
                if column.name in sub:  # left by an unfinished declaration
                    del sub[column.name]
                self._create_column(sub, table, column, rows)
                self._fill(table, column, rows)
                columns.append(column)
            layout[table.name] = Table(table.name, table.group, table.dim, table.chunk_rows, tuple(columns))
        if layout != self._layout:
            committed = {name: self._committed.get(name, 0) for name in layout}
            write_attributes(self._group, {"tables": {name: t.to_dict() for name, t in layout.items()},
                                      "committed": committed})
            self._layout, self._committed = layout, committed

    def _fill(self, table: Table, column: Column, rows: int) -> None:
        """Write the fill value into the first ``rows`` rows of a column added to a table that has
        them, chunk by chunk: every chunk below the committed length must exist."""
        array = self._array(table, column.name)
        for start in range(0, rows, table.chunk_rows):
            n = min(table.chunk_rows, rows - start)
            array[start:start + n] = np.full((n, *column.inner_shape), column.fill_value, dtype=column.numpy_dtype)

    def _truncate_uncommitted(self) -> None:
        for table in self._layout.values():
            n = self._committed.get(table.name, 0)
            for column in table.columns:
                array = self._array(table, column.name)
                if array.shape[0] != n:
                    array.resize((n, *column.inner_shape))

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "CampaignStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------
    @property
    def attrs(self) -> dict:
        return self._group.attrs.asdict()

    @property
    def tables(self) -> dict[str, Table]:
        return dict(self._layout)

    def _table(self, table: TableRef) -> Table:
        if isinstance(table, Table):
            return self._layout.get(table.name, table)
        if table not in self._layout:
            raise StoreError(f"store {self.directory} has no table {table!r}")
        return self._layout[table]

    def length(self, table: TableRef) -> int:
        return int(self._committed.get(table.name if isinstance(table, Table) else table, 0))

    def _array(self, table: Table, column: str) -> zarr.Array:
        # every chunk is written, even one that holds only fill values, so that a missing chunk
        # below the committed length always means damage (storage/integrity.py)
        return self._group[f"{table.group}/{column}"].with_config({"write_empty_chunks": True})

    def read(self, table: TableRef, columns: Iterable[str] | None = None,
             rows: slice | np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Committed rows of a table (all, a slice, or sorted integer indices). A table the
        store does not hold (a recipe's table in another recipe's store) reads as empty."""
        spec = self._table(table)
        n = self.length(spec)
        names = list(columns) if columns is not None else list(spec.names)
        if n == 0 or spec.name not in self._layout:
            return spec.empty(names)
        out = {}
        for name in names:
            spec.column(name)
            array = self._array(spec, name)
            with damaged_read(self.directory, spec, name):
                if rows is None:
                    values = array[:n]
                elif isinstance(rows, slice):
                    start, stop, _ = rows.indices(n)
                    values = array[start:stop]
                else:
                    values = array.get_orthogonal_selection((np.asarray(rows, dtype=np.int64),))
            out[name] = np.asarray(values)
        return out

    def read_structures(self, shape: StructureTables, rows: slice | np.ndarray | None = None,
                        frame_columns: Iterable[str] | None = None,
                        atom_columns: Iterable[str] | None = None) -> StructureBlock:
        """Rows of a ragged structures table and the atoms of those rows (read as one range)."""
        names = None if frame_columns is None else [*frame_columns, "n_atoms", "atom_start"]
        frames = self.read(shape.frames, names, rows)
        if len(frames["n_atoms"]) == 0:
            return StructureBlock(frames, shape.atoms.empty(atom_columns), 0)
        first = int(frames["atom_start"].min())
        last = int((frames["atom_start"] + frames["n_atoms"]).max())
        return StructureBlock(frames, self.read(shape.atoms, atom_columns, slice(first, last)), first)

    # -- writing -----------------------------------------------------------------------------
    def append(self, blocks: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Append rows to several tables as one transaction (data first, then the commit). A
        write that fails (a full disk) leaves the store as it was committed: its rows lie past
        the commit pointer, and the next writer drops them."""
        if self._lock is None:
            raise StoreError("store was opened read-only")
        try:
            self._append(blocks)
        except OSError as exc:
            raise StoreError(f"cannot write to store {self.directory}: {exc.strerror or exc}; what was "
                             "committed before is intact, and a relaunch redoes the rest") from None

    def _append(self, blocks: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        new_committed = dict(self._committed)
        for table_name, columns in blocks.items():
            table = self._table(table_name)
            missing = set(table.names) - set(columns)
            if missing:
                raise StoreError(f"append to {table_name!r} lacks columns {sorted(missing)}")
            lengths = {len(v) for v in columns.values()}
            if len(lengths) != 1:
                raise StoreError(f"append to {table_name!r} has columns of different lengths {sorted(lengths)}")
            n_new = lengths.pop()
            if n_new == 0:
                continue
            start = self._committed.get(table_name, 0)
            for column in table.columns:
                array = self._array(table, column.name)
                array.resize((start + n_new, *column.inner_shape))
                values = np.asarray(columns[column.name])
                array[start:start + n_new] = values.astype(object) if column.dtype == "str" else values
            new_committed[table_name] = start + n_new
        if new_committed != self._committed:
            write_attributes(self._group, {"committed": new_committed})
            self._committed = new_committed

    def record_launch(self, info: Mapping[str, Any]) -> int:
        """Append a launch record (who, where, what spec) and return its index."""
        launches = list(self._group.attrs.get("launches", []))
        index = len(launches)
        launches.append({"index": index, "host": socket.gethostname(), "pid": os.getpid(),
                         "started_unix": time.time(), **info})
        try:
            write_attributes(self._group, {"launches": launches, "spec": info.get("spec", {})})
        except OSError as exc:
            raise StoreError(f"cannot write to store {self.directory}: {exc.strerror or exc}") from None
        return index


__all__ = ["CampaignStore", "Column", "Table"]
