"""Tests against the real services; see conftest.py for the fixtures that start them."""
