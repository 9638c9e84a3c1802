"""Shared test configuration: hypothesis profiles sized for a 2-core CI machine."""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,  # CI runs are reproducible; run with HYPOTHESIS_PROFILE=dev to explore
)
settings.register_profile(
    "dev",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def mnist5k():
    """The embedded default data set, loaded once (seed 0 split)."""
    from convprop.data import load_dataset

    return load_dataset("mnist-5k", seed=0)
