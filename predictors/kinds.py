"""The kinds of predictor network (a torch-free constant: the command line lists them without importing torch)."""

KINDS = ("pool", "lstm")
