"""SQL of the registry's CRUD routes, one module per resource.

Functions take the request's connection and validated models, and return
models; a missing row is ``None`` and a conflict a ``Conflict``, which the
routes turn into 404 and 409 problems.
"""
