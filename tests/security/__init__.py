"""Hostile clients against a real node: limits, malformed input, floods, slow and silent peers."""
