"""Tracegate: edge gateway for product serialization and traceability.

Data flows one way: devices -> binding -> journal -> forwarder. See docs/architecture.md.
"""

__version__ = "0.1.0"
