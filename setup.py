"""Build the optional compiled convolution; everything else is in pyproject.toml.

The extension is optional: without a C compiler the package installs and
runs on its numba and numpy kernels.
"""

import sys

from setuptools import Extension, setup

flags = [] if sys.platform == "win32" else ["-O3", "-ffp-contract=off", "-fno-fast-math"]

setup(
    ext_modules=[
        Extension("dalverify.accel._fmaconv", sources=["dalverify/accel/_fmaconv.c"], extra_compile_args=flags,
                  optional=True),
    ],
)
