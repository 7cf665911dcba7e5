"""Exceptions that users catch. Each message names the file or key and says what to do."""


class Ca2stError(Exception):
    """Base class of every error raised on purpose by ca2st."""


class CheckpointError(Ca2stError):
    """A weight file cannot be read or does not fit the model."""


class DataError(Ca2stError):
    """A video, audio track or annotation file is missing, broken or inconsistent."""


class ConfigError(Ca2stError):
    """A configuration key is unknown or has an invalid value."""
