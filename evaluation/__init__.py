"""Evaluation metrics of the suite: likelihood (IWAE), FID, KID, IS, precision/recall, PPL."""
