"""A damaged store is an error, never data.

Zarr reads a missing chunk as fill values, so a deleted chunk would silently become NaN energies
or a ledger that forgot finished work. The store therefore writes every chunk (also those of
fill values only) with a CRC32C checksum, and when it is opened checks that every chunk below
each table's committed length exists; opened for writing (a launch), it also reads every chunk
once, which verifies the checksums, before it writes anything. Schema version 1 wrote no
checksums and left out chunks of fill values only: such arrays are not checked until the first
launch migrates them (rewrites them with checksums, every chunk written).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Iterator, Mapping

import zarr
from zarr.codecs import Crc32cCodec

from storage.errors import StoreError
from storage.tables import Table


def open_root(path: Path, mode: str) -> zarr.Group:
    try:
        return zarr.open_group(path, mode=mode)
    except (ValueError, KeyError, TypeError) as exc:  # unparsable or incomplete zarr.json
        raise StoreError(f"store {path} is damaged: its root metadata {path / 'zarr.json'} cannot be read "
                         f"({type(exc).__name__}: {str(exc)[:200]})") from None


def write_attributes(group: zarr.Group, changes: Mapping[str, object]) -> None:
    """Merge ``changes`` into the group's attributes in one atomic write of its zarr.json.

    ``group.attrs.update`` must not be used for this: zarr's Attributes is a MutableMapping whose
    update sets one key at a time, one file write each, so a process killed between two writes
    leaves a commit pointer without its layout, or a store version without its owner. On a failed
    write the in-memory attributes are restored, so that a later write cannot carry the failed one.
    """
    before = dict(group.attrs)
    try:
        group.update_attributes(dict(changes))
    except BaseException:
        group.metadata.attributes.clear()
        group.metadata.attributes.update(before)
        raise


def checksummed(array: zarr.Array) -> bool:
    return any(isinstance(codec, Crc32cCodec) for codec in array.compressors)


def check_chunks(group: zarr.Group, layout: Mapping[str, Table], committed: Mapping[str, int], path: Path,
                 checksums: bool = False) -> None:
    """Raise StoreError naming the first missing (or, with ``checksums``, corrupt) chunk below
    a table's committed length."""
    for table in layout.values():
        n = int(committed.get(table.name, 0))
        if n == 0:
            continue
        for column in table.columns:
            where = f"table {table.name!r}, column {column.name!r}"
            try:
                array = group[f"{table.group}/{column.name}"]
            except (KeyError, ValueError, TypeError) as exc:
                raise StoreError(f"store {path} is damaged: {where}: its array cannot be opened "
                                 f"({type(exc).__name__})") from None
            if array.shape[0] < n:
                raise StoreError(f"store {path} is damaged: {where} has {array.shape[0]} rows, {n} committed")
            if not checksummed(array):
                continue
            rows = array.chunks[0]
            for k in range(math.ceil(n / rows)):
                key = array.metadata.encode_chunk_key((k,) + (0,) * (array.ndim - 1))
                if not (path / table.group / column.name / key).is_file():
                    raise StoreError(f"store {path} is damaged: {where}: chunk {key} (rows {k * rows}–"
                                     f"{min(n, (k + 1) * rows) - 1}) is missing")
                if checksums:
                    with damaged_read(path, table, column.name, key):
                        array[k * rows:min(n, (k + 1) * rows)]


@contextlib.contextmanager
def damaged_read(path: Path, table: Table, column: str, chunk: str | None = None) -> Iterator[None]:
    """Turn a chunk that fails its checksum or cannot be decoded into a StoreError naming it."""
    try:
        yield
    except (ValueError, RuntimeError, OSError) as exc:
        where = f"table {table.name!r}, column {column!r}" + (f", chunk {chunk}" if chunk else "")
        raise StoreError(f"store {path} is damaged: {where} cannot be read ({type(exc).__name__}: "
                         f"{str(exc)[:200]})") from None
