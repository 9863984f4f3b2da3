"""SAN backbone. Placeholder."""
