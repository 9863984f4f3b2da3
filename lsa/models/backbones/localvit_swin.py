"""LocalViT-Swin. Placeholder."""
