"""Export of torch modules to piecewise-linear graphs (imports torch)."""

from dalverify.export.torch_export import export

__all__ = ["export"]
