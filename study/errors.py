"""The one error type for bad user input: it names the bad value and the valid choices."""


class ConfigError(ValueError):
    """A configuration value is invalid; raised before any training starts."""


def unknown(kind: str, name, choices) -> ConfigError:
    """Error for a name missing from a registry, listing the valid names."""
    return ConfigError(f"unknown {kind} {name!r}; valid choices: {', '.join(sorted(choices))}")
