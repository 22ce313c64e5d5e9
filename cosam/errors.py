"""Exception types. Every message names the offending file or parameter and the fix."""


class CosamError(Exception):
    """Base class for errors a user can fix (bad input, bad config, bad checkpoint)."""


class DataError(CosamError):
    """A data folder, image or mask is missing or malformed."""


class CheckpointError(CosamError):
    """A checkpoint file is missing, truncated or of the wrong architecture."""


class ConfigError(CosamError):
    """A configuration key or value is invalid."""
