"""Settings for the whole suite."""

from __future__ import annotations

import os

from hypothesis import settings

# In CI the property tests draw the same examples every run, so a submission's result does not
# depend on luck; on a developer's machine they keep exploring new examples each run.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
