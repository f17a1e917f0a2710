"""Bundled YAML configurations."""

from pathlib import Path

CONFIG_DIR = Path(__file__).parent
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
