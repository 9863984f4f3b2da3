"""LESA block. Placeholder: filled in by the LESA work."""
