"""Instrumetry: measured usage of shared scientific instruments.

The top-level package holds the pure domain (``instrumetry.domain``), the
local development stack (``instrumetry.devstack``) and the ``instrumetry``
command line, which is the only place where components are composed.
"""

__version__ = "0.1.0"
