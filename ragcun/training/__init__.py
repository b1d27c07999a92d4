"""From a recipe to a saved model: the recipe, the training data, the head-only mode, the monitor and the run."""
