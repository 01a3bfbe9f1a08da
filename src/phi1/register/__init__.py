"""`phi1 register`: register the checkpoints as challenger model versions with their lineage."""

from phi1.register.stage import run

__all__ = ["run"]
