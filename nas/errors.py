"""The one exception type meant for users.

Anything raised as :class:`NasError` is printed by the CLI as a single line on stderr
(``nas: error: <message>``) with exit status 2. Everything else is a bug and keeps its traceback.
"""


class NasError(Exception):
    """A problem with the user's input (files, arguments, specs, spaces, data)."""
