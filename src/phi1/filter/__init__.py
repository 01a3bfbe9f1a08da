"""`phi1 filter`: train the quality classifier on the annotations over the `embed` stage's vectors, keep the best files."""

from phi1.filter.stage import run

__all__ = ["run"]
