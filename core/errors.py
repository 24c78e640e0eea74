"""The one exception type for mistakes a user can fix (bad config, missing data, ...).

The CLI prints `mnemo: error: <message>` and exits 2 for it, without a traceback; anything else is a
bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input; the message says what is wrong and what to do."""


def check_choice(name: str, value, choices) -> None:
    """ValueError "NAME: 'VALUE' is not one of A, B" unless `value` is one of `choices` (config sections
    raise it from __post_init__; the config loader turns it into a UserError naming the section)."""
    if value not in choices:
        raise ValueError(f"{name}: '{value}' is not one of {', '.join(map(str, choices))}")
