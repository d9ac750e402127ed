"""Audit certificates for DAL-Test runs and their independent verifier.

- :mod:`dalverify.certify.piece_check`: certification of every interval of a
  line walk (exact rational arithmetic for small graphs, a float64 midpoint
  with a rigorous rounding-error radius for full models, an optional LP
  cross-check, and the tiling checks).
- :mod:`dalverify.certify.certificate`: the versioned certificate file and
  its writer.
- :mod:`dalverify.certify.verify`: the independent verifier. It imports
  neither torch nor the producer's line walk, selection or methods code.

Submodules are imported on demand, so that importing the verifier does not
import the producer.
"""

__all__ = ["certificate", "piece_check", "verify"]
