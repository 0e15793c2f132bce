"""What a benchmark measures: a server (started pinned to one core) plus how to publish to its clients."""
