"""Shared fixtures and the hypothesis profiles.

The default profile 'ci' is derandomized and database-less so that every run draws the
same examples (reproducible CI).  Select another with HYPOTHESIS_PROFILE=dev (random,
more examples) for local exploration.
"""
import importlib
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    derandomize=False,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def conv3dt():
    """The library under test (imported lazily so reference-only tests run without it)."""
    return importlib.import_module("conv3dt")


@pytest.fixture(scope="session")
def F(conv3dt):
    """conv3dt.functional"""
    return importlib.import_module("conv3dt.functional")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
