"""LocalViT locality feed-forward. Placeholder: filled in by the LocalViT work."""
