"""Swin host (per-stage attention / feed-forward by config). Placeholder."""
