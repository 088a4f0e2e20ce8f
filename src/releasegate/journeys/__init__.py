"""User journeys (smoke/, e2e/, the verify phase): see ``releasegate.journeys.base``."""

from releasegate.journeys.base import (
    PREFIX,
    REGISTRY,
    Journey,
    Journeyer,
    JourneyResult,
    StepRecord,
    exchange_data,
    get_journey,
    journey,
    known_journeys,
    run_journey,
)

__all__ = [
    "PREFIX",
    "REGISTRY",
    "Journey",
    "JourneyResult",
    "Journeyer",
    "StepRecord",
    "exchange_data",
    "get_journey",
    "journey",
    "known_journeys",
    "run_journey",
]
