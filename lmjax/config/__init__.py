"""Configuration: command-line overrides, validation and sweeps."""
