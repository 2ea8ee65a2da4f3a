"""Recipes: which tensor gets which type, exact sizes, lint, llama-quantize command lines."""
