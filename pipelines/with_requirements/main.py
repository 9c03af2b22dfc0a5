"""A pipeline with a requirements.txt: uv installs it (cached) before the script runs."""
import six

print(f"six {six.__version__} imported from {six.__file__}")
