"""One Zarr v3 group per campaign that is also its checkpoint.

Appends are transactions: every table's new rows are written first, then the root group's
``committed`` attribute (row count per table) is replaced in one atomic metadata write. Rows
past ``committed`` belong to a transaction that never finished; readers ignore them and the
next writer truncates them. A crash therefore redoes a batch, never loses or doubles one.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import zarr

from storage.errors import StoreError
from storage.lock import StoreLock
from storage.schema import LOCK_NAME, SCHEMA_VERSION, TABLES, ZARR_NAME, Column, Table


def _zarr_dtype(column: Column):
    return str if column.dtype == "str" else column.dtype


class CampaignStore:
    """Read and (under the lock) append to a campaign's store directory."""

    def __init__(self, directory: Path, group: zarr.Group, lock: StoreLock | None):
        self.directory = directory
        self._group = group
        self._lock = lock
        self._committed: dict[str, int] = dict(group.attrs.get("committed", {}))

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | os.PathLike) -> "CampaignStore":
        """Read-only: no lock, no writes; safe while a launch is running."""
        directory = Path(directory)
        path = directory / ZARR_NAME
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{directory} is not a campaign store (no {ZARR_NAME} inside)")
        group = zarr.open_group(path, mode="r")
        cls._check_schema(group, directory)
        return cls(directory, group, None)

    @classmethod
    def open_for_writing(cls, directory: str | os.PathLike, campaign: str) -> "CampaignStore":
        """Take the lock, create the store if new, and drop rows of any unfinished transaction."""
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise StoreError(f"store path {directory} exists and is not a directory")
        zarr_path = directory / ZARR_NAME
        if directory.is_dir() and any(directory.iterdir()) and not (zarr_path / "zarr.json").is_file():
            raise StoreError(f"{directory} is not empty and holds no campaign store; choose another store path")
        directory.mkdir(parents=True, exist_ok=True)
        lock = StoreLock(directory / LOCK_NAME).acquire()
        try:
            group = zarr.open_group(zarr_path, mode="a")
            if "schema_version" in group.attrs:
                cls._check_schema(group, directory)
                owner = group.attrs.get("campaign")
                if owner != campaign:
                    raise StoreError(f"store {directory} belongs to campaign {owner!r}, not {campaign!r}")
            store = cls(directory, group, lock)
            store._create_missing_arrays()
            if "schema_version" not in group.attrs:
                group.attrs.update({"schema_version": SCHEMA_VERSION, "campaign": campaign,
                                    "committed": {name: 0 for name in TABLES}, "launches": []})
                store._committed = {name: 0 for name in TABLES}
            store._truncate_uncommitted()
            return store
        except BaseException:
            lock.release()
            raise

    @staticmethod
    def _check_schema(group: zarr.Group, directory: Path) -> None:
        version = group.attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(f"store {directory} has schema_version {version!r}; this version reads {SCHEMA_VERSION}")

    def _create_missing_arrays(self) -> None:
        for table in TABLES.values():
            sub = self._group.require_group(table.group)
            for column in table.columns:
                if column.name in sub:
                    continue
                sub.create_array(column.name, shape=(0, *column.inner_shape),
                                 chunks=(table.chunk_rows, *column.inner_shape), dtype=_zarr_dtype(column),
                                 fill_value=column.fill_value, dimension_names=list(column.dims))

    def _truncate_uncommitted(self) -> None:
        for table in TABLES.values():
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

    def length(self, table: str) -> int:
        return int(self._committed.get(table, 0))

    def _array(self, table: Table, column: str) -> zarr.Array:
        return self._group[f"{table.group}/{column}"]

    def read(self, table: str, columns: Iterable[str] | None = None,
             rows: slice | np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Committed rows of a table (all, a slice, or sorted integer indices)."""
        spec = TABLES[table]
        n = self.length(table)
        names = list(columns) if columns is not None else [c.name for c in spec.columns]
        out = {}
        for name in names:
            spec.column(name)
            if n == 0:
                column = spec.column(name)
                out[name] = np.empty((0, *column.inner_shape), dtype=object if column.dtype == "str" else column.dtype)
                continue
            array = self._array(spec, name)
            if rows is None:
                values = array[:n]
            elif isinstance(rows, slice):
                start, stop, _ = rows.indices(n)
                values = array[start:stop]
            else:
                values = array.get_orthogonal_selection((np.asarray(rows, dtype=np.int64),))
            out[name] = np.asarray(values)
        return out

    # -- writing -----------------------------------------------------------------------------
    def append(self, blocks: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Append rows to several tables as one transaction (data first, then the commit)."""
        if self._lock is None:
            raise StoreError("store was opened read-only")
        new_committed = dict(self._committed)
        for table_name, columns in blocks.items():
            table = TABLES[table_name]
            missing = {c.name for c in table.columns} - set(columns)
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
            self._group.attrs.update({"committed": new_committed})
            self._committed = new_committed

    def record_launch(self, info: Mapping[str, Any]) -> int:
        """Append a launch record (who, where, what spec) and return its index."""
        launches = list(self._group.attrs.get("launches", []))
        index = len(launches)
        launches.append({"index": index, "host": socket.gethostname(), "pid": os.getpid(),
                         "started_unix": time.time(), **info})
        self._group.attrs.update({"launches": launches, "spec": info.get("spec", {})})
        return index
