"""Local development stack: real PostgreSQL + TimescaleDB and Mosquitto in a state folder.

Started by ``instrumetry dev up`` and by the test suite, on non-default ports,
so development and tests run against the same services as production, never
mocks. The package imports only the standard library, psycopg and the
domain's errors, so it stays independent of every component it serves.
"""
