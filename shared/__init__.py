"""Prism contracts shared by the gateway, backends and clients.

Subjects and their validation (:mod:`shared.subjects`), client frames (:mod:`shared.frames`), close codes
(:mod:`shared.close_codes`), NATS headers (:mod:`shared.headers`), the presence key layout
(:mod:`shared.presence_keys`), and the Python SDKs: :mod:`shared.client` for WebSocket clients (with
:mod:`shared.backoff`, its reconnect policy) and :mod:`shared.backend` for services that talk to clients
through NATS.
"""
