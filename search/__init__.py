"""search: search space, strategies, evaluator, engines, the search loop and the CLI."""
