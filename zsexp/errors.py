"""The one exception type the CLI turns into a clean one-line error and exit code 2."""


class ZsexpError(Exception):
    """Bad user input (file, key, value) or an environment problem the user can fix.

    The message states the rule, then the offending values, and where possible the fix.
    """

    exit_code = 2
