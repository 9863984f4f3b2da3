"""LESA-ResNet backbone. Placeholder."""
