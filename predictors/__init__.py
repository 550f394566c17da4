"""predictors: schedule encoding and the learned quality predictor (train / rank / save)."""
