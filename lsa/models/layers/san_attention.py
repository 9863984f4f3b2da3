"""SAN self-attention (pairwise/patchwise). Placeholder: filled in by the SAN work."""
