"""Build the optional compiled kernels of the exact walk; everything else is in pyproject.toml.

The extensions are optional: without a C compiler the package installs and
runs on its numba and numpy kernels.
"""

import sys

from setuptools import Extension, setup

flags = [] if sys.platform == "win32" else ["-O3", "-ffp-contract=off", "-fno-fast-math"]

setup(
    ext_modules=[
        Extension("dalverify.accel._fmaconv", sources=["dalverify/accel/_fmaconv.c"], extra_compile_args=flags,
                  optional=True),
        Extension("dalverify.accel._pointwise", sources=["dalverify/accel/_pointwise.c"], extra_compile_args=flags,
                  optional=True),
    ],
)
