"""``StrEnum``, the type of every Parquet column's fixed set of values (``AnswerSource``,
``ToolStatus``, ``JudgeStatus``, ...): ``enum.StrEnum`` on Python 3.11+, the same behaviour on
3.10. A member *is* its string (``AnswerSource.GUESS == "guess"``), so tables, JSON and cache
keys get the plain strings, and rows read back from Parquet compare equal to the members."""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, Enum):
        """A str Enum whose str() and format() are its value, as Python 3.11's."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)


__all__ = ["StrEnum"]
