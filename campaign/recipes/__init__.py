"""The built-in recipes, one module per kind; importing this package registers them
(campaign/recipe.py). Building a recipe's plan reads and checks every input before anything is
written, so a bad structure file leaves the store untouched."""

from campaign.recipes import active_learning, anneal, irradiation, label, phase_diagram, slab_mc, validate  # noqa: F401 - registered on import
