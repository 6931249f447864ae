"""Recipes turn a validated spec into stages. Building a recipe reads and checks every input
before anything is written, so a bad structure file leaves the store untouched."""

from campaign.recipes.label import label_stages

__all__ = ["label_stages"]
