"""The package's error types that several layers raise.

ConfigError lives here, not in config.py, because the sampler classes check their own
options and config.py imports the sampler registry.
"""


class ConfigError(ValueError):
    """Bad input: reported as one line on rank 0, exit code 2."""
