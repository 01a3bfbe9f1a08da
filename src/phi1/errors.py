"""The one exception family the CLI turns into a one-line error (exit code 2)."""


class Phi1Error(Exception):
    """A user-facing error: bad params, bad input data, an unreachable service. The
    message names the offending key, file, line or URL."""
