"""The one exception type for mistakes a user can fix (bad config, missing data, ...).

The CLI prints `mnemo: error: <message>` and exits 2 for it, without a traceback; anything else is a
bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input; the message says what is wrong and what to do."""
