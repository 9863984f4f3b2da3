"""ELSA attention. Placeholder: filled in by the ELSA work."""
