"""Package discovery over the four source roots (the metadata is in setup.cfg).

kernels/, models/ and experiments/ live at the top of the repository but import
as difftre.kernels, difftre.models and difftre.experiments; every sub-package
under them is found here, so a new experiment folder needs no packaging edit.
"""
from setuptools import find_packages, setup

ROOTS = {"difftre": "difftre", "difftre.kernels": "kernels", "difftre.models": "models",
         "difftre.experiments": "experiments"}

setup(package_dir=ROOTS,
      packages=[f"{name}.{sub}" if sub else name
                for name, root in ROOTS.items() for sub in [""] + find_packages(root)])
