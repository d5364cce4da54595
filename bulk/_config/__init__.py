"""Reading a run's config file (private: :func:`bulk.load` is the public entry point)."""

from bulk._config._load import BackendConfig, Config, RunConfig, fingerprint_of, load
from bulk._config._read import (
    MAX_CONFIG_BYTES,
    JSONValueError,
    json_nesting_column,
    loads_exact_json,
    number_problem,
    open_regular,
)
from bulk._config._sweep import DEFAULT_MAX_JOBS, Distribution, SweepConfig, is_variable_name

__all__ = [
    "DEFAULT_MAX_JOBS",
    "MAX_CONFIG_BYTES",
    "BackendConfig",
    "Config",
    "Distribution",
    "JSONValueError",
    "RunConfig",
    "SweepConfig",
    "fingerprint_of",
    "is_variable_name",
    "json_nesting_column",
    "load",
    "loads_exact_json",
    "number_problem",
    "open_regular",
]
