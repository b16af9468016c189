"""The collector: MQTT messages in, trustworthy rows out.

It owns the storage schema (``collector/migrations``), stores events and
heartbeats idempotently, derives state intervals, and keeps every message it
cannot accept in the dead-letter table with the reason.
"""
