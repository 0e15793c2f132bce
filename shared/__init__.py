"""Prism contracts shared by the gateway, backends and clients.

Subjects and their validation (:mod:`shared.subjects`), client frames (:mod:`shared.frames`), close codes
(:mod:`shared.close_codes`), NATS headers (:mod:`shared.headers`), the presence key layout
(:mod:`shared.presence_keys`), HTTP backend signatures (:mod:`shared.http_signing`), and the Python SDKs:
the package :mod:`shared.client` for WebSocket clients (with :mod:`shared.backoff`, its reconnect policy)
and :mod:`shared.backend` for services that talk to clients through NATS. :mod:`shared.nats_connection`
is the NATS connection every Prism process makes; :mod:`shared.cli` is the ``prism`` command.

Nothing here imports ``gateway/``, ``notification_service/`` or ``loadtest/``, except :mod:`shared.cli`,
which runs them (tests/unit/test_layout.py).
"""
