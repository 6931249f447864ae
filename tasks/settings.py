"""One strict base for settings models: task settings, and the campaign's spec models that derive
from them (a spec section is its task's settings plus what only the campaign needs)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo never passes silently); instances are immutable and hashable,
    so settings can be task arguments and parts of task keys (``model_dump()``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
