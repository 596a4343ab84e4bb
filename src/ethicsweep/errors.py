"""User-facing errors: each renders as one line naming the field, the value and what is allowed."""


class EthicsweepError(Exception):
    """A mistake in the user's input. The CLI prints it as one line and exits with status 2."""


class SpecError(EthicsweepError):
    """A sweep spec that does not validate."""


class DataError(EthicsweepError):
    """A data file or column that cannot be used as the spec asks."""
