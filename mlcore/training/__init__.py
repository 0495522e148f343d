"""mlcore.training."""
