"""LocalViT-TNT. Placeholder."""
