"""The gateway's pure core: decisions made without sockets or an event loop, unit-tested as such."""
