"""LocalViT-PVT. Placeholder."""
