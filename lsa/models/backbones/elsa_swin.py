"""ELSA-Swin backbone. Placeholder."""
