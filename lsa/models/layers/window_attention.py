"""Swin window attention. Placeholder: filled in by the ELSA-Swin work."""
