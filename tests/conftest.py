"""Test configuration: Hypothesis profiles and shared fixtures.

Profiles: ``ci`` (default; derandomized, bounded, no deadline) and
``thorough`` (many more examples). Select with HYPOTHESIS_PROFILE.
"""

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, max_examples=40, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Make the shared reference helpers importable as ``reference.*``.
sys.path.insert(0, str(Path(__file__).parent))
