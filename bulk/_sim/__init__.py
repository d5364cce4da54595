"""Simulators of the services bulk talks to, for tests, benchmarks and trying bulk out.

Each is an ``aiohttp.web`` application served on 127.0.0.1 by ``bulk sim KIND``.
"""
