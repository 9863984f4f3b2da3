"""LocalViT-T2T. Placeholder."""
