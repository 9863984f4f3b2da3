"""LocalViT (DeiT host). Placeholder."""
