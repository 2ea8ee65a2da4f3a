"""Recipes: which tensor gets which type, exact sizes, lint, llama-quantize command lines."""

from iqk_studio.recipe.plan import model_view, plan
from iqk_studio.recipe.records import Lint, Placement, Plan, PlanEntry, Recipe, Rule

__all__ = ["Lint", "Placement", "Plan", "PlanEntry", "Recipe", "Rule", "model_view", "plan"]
