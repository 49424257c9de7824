"""Errors that mean "the user's input is wrong" (exit code 2), as opposed to bugs (exit code 1)."""

from __future__ import annotations


class InputError(Exception):
    """Bad input or usage. The message is one plain sentence naming the file or option and the problem.

    The CLI prints it without a traceback and exits with status 2.
    """


class DataError(InputError):
    """A data file or folder is unreadable or inconsistent (shape, affine, NaN, label values, ...).

    Attributes:
        problems: one sentence per bad file, each naming the file.
    """

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class Interrupted(Exception):
    """A signal (SIGINT, SIGTERM) stopped the command after it saved what it could.

    The CLI prints the message and exits with the shell's convention, 128 + the signal number (130, 143).

    Attributes:
        exit_code: the process exit status.
    """

    def __init__(self, message: str, exit_code: int = 130):
        self.exit_code = exit_code
        super().__init__(message)


class RunError(Exception):
    """A run could not go on although its input was valid (it diverged: NaN or infinite values).

    The CLI prints the message (one sentence saying what is kept and what to do) and exits with status 1.
    """
