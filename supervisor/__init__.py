"""entrypoint-supervisor: a PID 1 for Python web apps that explains every death.

This module deliberately imports nothing: start-up cost is part of the product.
"""

__version__ = "0.1.0"
