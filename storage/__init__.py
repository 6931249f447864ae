"""The campaign's Zarr store: layout, schema, transactional appends, readers. No dask, no torch."""

from storage.errors import StoreError, StoreLockedError
from storage.store import CampaignStore

__all__ = ["CampaignStore", "StoreError", "StoreLockedError"]
