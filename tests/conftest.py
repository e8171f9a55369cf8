"""Settings shared by every test module.

Hypothesis (the `test_properties_*` modules) runs derandomized: the examples are derived from each test's source, so
every run on every machine tries the same ones and CI is reproducible. No deadline (a cold import or a busy CI
machine must not fail a property) and no example database, so a failure found once is not replayed from a local file
(Hypothesis still keeps a small cache in `.hypothesis/`, which it git-ignores itself). Each property sets its own
small `max_examples`; `HYPOTHESIS_PROFILE=random` draws fresh random examples instead, for a local search.
"""

import os

from hypothesis import settings

settings.register_profile("icreward", derandomize=True, deadline=None, database=None, print_blob=True)
settings.register_profile("random", derandomize=False, deadline=None, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "icreward"))
