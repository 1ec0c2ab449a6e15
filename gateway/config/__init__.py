"""Configuration: the line file's models, loading with file:line:col errors, and its docs."""

from gateway.config.loader import ConfigError, LoadedConfig, Problem, load_line
from gateway.config.models import LineConfig

__all__ = ["ConfigError", "LineConfig", "LoadedConfig", "Problem", "load_line"]
