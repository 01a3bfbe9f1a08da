"""`phi1 embed`: a vector for every file of data/raw (the quality filter's features)."""

from phi1.embed.stage import run

__all__ = ["run"]
