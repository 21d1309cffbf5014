import os

from hypothesis import HealthCheck, settings

# The CI machine is small and shared: no per-example deadline, no "too slow" failures.
settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", 100)),
)
settings.load_profile("ci")
