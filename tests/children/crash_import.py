"""Import a package whose nested module imports something missing."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "pkg_broken"))
import services.notify  # noqa: F401
