"""`phi1 validate`: the Great Expectations data gate over every dataset."""

from phi1.validate.stage import run

__all__ = ["run"]
