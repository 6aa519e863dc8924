"""A recipe from outside hf-recipes, as another package would ship it: summarisation with a causal LM."""
