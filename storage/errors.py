class StoreError(Exception):
    """The store is missing, foreign, of another schema version, or damaged."""


class StoreLockedError(StoreError):
    """Another launch holds the store's lock."""
