"""The Django Channels peer: a minimal Django project (``benchsite``) on channels_redis, and its target.

``benchsite`` runs only in the peer's own virtualenv (see ``requirements.txt``), with this directory on
``PYTHONPATH``; the rest runs in the load generator.
"""
