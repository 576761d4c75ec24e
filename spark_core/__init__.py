"""spark_core: the SPaRK library (no Prefect in here; flows and tasks wrap it)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spark-pipeline")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"

CATEGORIES: tuple[str, ...] = (
    "biology",
    "business",
    "chemistry",
    "computer science",
    "economics",
    "engineering",
    "health",
    "history",
    "law",
    "math",
    "other",
    "philosophy",
    "physics",
    "psychology",
)
"""The 14 MMLU-Pro categories, spelled exactly as the dataset spells them."""
