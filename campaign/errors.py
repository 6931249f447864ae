class SpecError(Exception):
    """The spec (or a file it names) is wrong; nothing has been written."""


class CampaignFailed(Exception):
    """A stage the campaign cannot go on without has failed (every committee member, a dimer scan);
    the failed items' errors are in the ledger (``campaign status``), and a relaunch retries them."""
