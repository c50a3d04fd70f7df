"""The error every recipe-configuration check raises (parsing, launch consistency, validation).

Its message is meant for the user: it names the file or field and the fix, and the ``mini-lm``
command prints it without a traceback.
"""


class ConfigError(ValueError):
    """A recipe configuration that cannot be used as written."""
