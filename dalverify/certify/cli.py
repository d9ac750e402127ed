"""The ``dalverify verify`` command.

``dalverify verify CERT [--graph G] [--image X] [--reference R]
[--covariance C] [--mask M] [--exact | --enclosure] [--lp] [--json]``
exits with 0 when the certificate is certified, 6 when only an enclosure of
the p-value is verified, and 5 when it is rejected.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_CERTIFIED = 0
EXIT_REJECTED = 5
EXIT_ENCLOSURE_ONLY = 6


def _read_image(path: str | None, name: str) -> Any:
    """Return an image file as a ``.npy`` path, or as a float64 array read by dalverify.imageio."""
    if path is None:
        return None
    if str(path).endswith(".npy"):
        return path
    from dalverify.imageio import load_image

    return load_image(path)


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify a certificate and print the outcome."""
    from dalverify.certify.verify import verify

    mask = None
    if args.mask is not None:
        if str(args.mask).endswith(".npy"):
            mask = args.mask
        else:
            from dalverify.imageio import load_image

            mask = load_image(args.mask)[0] != 0
    exact = None
    if args.exact:
        exact = True
    elif args.enclosure:
        exact = False
    report = verify(args.certificate, graph=args.graph, image=_read_image(args.image, "image"),
                    reference=_read_image(args.reference, "reference"), covariance=args.covariance, mask=mask,
                    exact=exact, lp=args.lp)
    if args.json:
        sys.stdout.write(report.to_json(indent=2) + "\n")
    elif not args.quiet:
        lines = [f"{args.certificate}: {report.outcome}"]
        if report.enclosure is not None:
            lines.append(f"  selective p-value in [{report.enclosure[0]}, {report.enclosure[1]}] "
                         f"(relative width {report.relative_width:.3g})")
        if report.method:
            lines.append(f"  intervals checked: {report.counts.get('intervals', 0)} ({report.method}); "
                         f"unresolved width {report.unresolved_width:.3g}")
        lines.extend(f"  - {reason}" for reason in report.reasons)
        lines.append(f"  {report.seconds:.2f} s")
        sys.stdout.write("\n".join(lines) + "\n")
    if report.rejected:
        return EXIT_REJECTED
    return EXIT_CERTIFIED if report.certified else EXIT_ENCLOSURE_ONLY


def add_commands(subparsers: Any) -> None:
    """Add ``verify`` to the ``dalverify`` command line."""
    parser = subparsers.add_parser("verify", help="re-check an audit certificate independently (no torch)",
                                   description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("certificate", help="certificate JSON file written by 'dalverify test --certificate'")
    parser.add_argument("--graph", default=None, help="graph file (.dalg) to use instead of the one named in the certificate")
    parser.add_argument("--image", default=None, help="test image to check against the recorded hash (.npy or an image file)")
    parser.add_argument("--reference", default=None, help="reference image to check against the recorded hash")
    parser.add_argument("--covariance", default=None, help="covariance file (.npz) when the certificate names none")
    parser.add_argument("--mask", default=None, help="eligibility mask when the certificate's sidecar lacks it")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--exact", action="store_true", help="check every interval in exact rational arithmetic")
    mode.add_argument("--enclosure", action="store_true", help="check intervals with float64 enclosures only")
    parser.add_argument("--lp", action="store_true", help="also re-solve the interval ends as LPs with HiGHS")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="print nothing; use the exit code")
    parser.set_defaults(handler=cmd_verify)


__all__ = ["EXIT_CERTIFIED", "EXIT_ENCLOSURE_ONLY", "EXIT_REJECTED", "add_commands", "cmd_verify"]
