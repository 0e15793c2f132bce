"""The Socket.IO 4 peer: a Node server on the Redis adapter (``server.js``), its dialect and target."""
