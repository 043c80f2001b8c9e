"""Packaging beyond what pyproject.toml can say: the repository's ``configs/`` ships as ``organfm/configs``.

One copy of every recipe and task file (``configs/``, read as is from a checkout); a wheel carries it as the
package data ``organfm.configs``, so ``--config coda`` and ``--task mednist`` work from any folder.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["organfm", "organfm.*"]) + ["organfm.configs"],
    package_dir={"organfm.configs": "configs"},
    package_data={"organfm.configs": ["*.yaml", "*/*.yaml"]},
)
