"""The one base class for "your input is wrong": a file, a field or a setting the user gave.

Every such error in `vremd` subclasses `InputError`, so a CLI catches `(InputError, OSError)` and prints one line
naming the file and the field. A bare `ValueError`, `TypeError` or `KeyError` from our own code is a bug: it is
not caught, and its traceback reaches the user.
"""


class InputError(ValueError):
    """A user's file, field or setting is wrong; the message names which and why."""
