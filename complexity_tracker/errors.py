"""Exception base class shared by the package."""


class ComplexityTrackerError(Exception):
    """Base class of every error raised on purpose by complexity_tracker."""
