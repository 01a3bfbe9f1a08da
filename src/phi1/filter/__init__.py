"""`phi1 filter`: embed, train the quality classifier on the annotations, keep the best files."""

from phi1.filter.stage import run

__all__ = ["run"]
