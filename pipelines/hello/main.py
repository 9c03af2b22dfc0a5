"""The smallest pipeline: greets whoever the NAME parameter names."""
import os
import platform

name = os.environ.get("NAME", "world")
print(f"Hello, {name}!")
print(f"Running on Python {platform.python_version()}")
