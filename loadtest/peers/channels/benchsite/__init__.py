"""A minimal Django project for the Channels peer: settings, ASGI app, one consumer, a publishing backend."""
