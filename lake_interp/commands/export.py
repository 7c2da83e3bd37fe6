"""`lake-interp export`: a fitted detector as one ONNX graph (work in progress, issue 15)."""

from __future__ import annotations


def add_parsers(sub) -> None:
    pass
