"""The one exception type for mistakes a user can fix (bad config, missing file, mismatch).

Command-line entry points turn it into a single ``error: ...`` line and exit code 2;
everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input; the message says what is wrong and how to fix it."""
