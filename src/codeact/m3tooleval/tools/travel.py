"""Travel itinerary planning over the shipped flight and hotel tables.

Locations in the tables are spelled with quotes (`'"A"'`), as in the original; the tools accept
both `"A"` and `'"A"'`. `max` and `min` are Python's built-ins and `sum` adds its arguments, as in
the original, where these tools shadowed the built-ins inside code actions.
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

Number = int | float


@dataclass(frozen=True)
class TravelTables:
    locations: list[str]
    flights: list[dict[str, Any]]
    hotels: list[dict[str, Any]]


@cache
def travel_tables() -> TravelTables:
    """The shipped `LOC`, `flights` and `hotels` tables."""
    text = resources.files("codeact.m3tooleval").joinpath("data/m3tooleval_travel_tables.json").read_text()
    data = json.loads(text)
    return TravelTables(data["LOC"], data["flights"], data["hotels"])


_PLURAL = {"Origin": "from_locations", "Destination": "to_locations", "Location": "locations"}


def _supported(location: str, role: str) -> str:
    tables = travel_tables()
    bare = location.strip('"')
    if bare not in {loc.strip('"') for loc in tables.locations}:
        raise ValueError(f"{role} [{bare}] is not supported. Supported {_PLURAL[role]}: {tables.locations}")
    return bare


def find_flights(from_location: str, to_location: str, date: str) -> list[dict[str, Any]]:
    """Flights from `from_location` to `to_location` on `date` (YYYY-MM-DD)."""
    origin = _supported(from_location, "Origin")
    destination = _supported(to_location, "Destination")
    return [
        dict(flight)
        for flight in travel_tables().flights
        if flight["from_location"].strip('"') == origin
        and flight["to_location"].strip('"') == destination
        and flight["date"] == date
    ]


def book_hotel(location: str, /, *preferences: str) -> list[dict[str, Any]]:
    """Hotels at `location` offering every one of `preferences`."""
    # `location` is positional-only because the sandbox's tool stubs (for now) send a parameter
    # before `*preferences` as a keyword, which collides with the positional preferences.
    place = _supported(location, "Location")
    return [
        {**hotel, "preferences": list(hotel["preferences"])}
        for hotel in travel_tables().hotels
        if hotel["location"].strip('"') == place and all(pref in hotel["preferences"] for pref in preferences)
    ]


def budget_calculator(flight_price: Number, hotel_price_per_night: Number, num_nights: int) -> Number:
    """The total budget of a trip: flight price plus nights times the hotel's price per night."""
    return flight_price + hotel_price_per_night * num_nights


def max_(*args: Any, **kwargs: Any) -> Any:
    """Finds the maximum value among the given arguments."""
    return builtins.max(*args, **kwargs)


def min_(*args: Any, **kwargs: Any) -> Any:
    """Finds the minimum value among the given arguments."""
    return builtins.min(*args, **kwargs)


def sum_(*args: Any) -> Any:
    """Sums the given arguments."""
    return builtins.sum(args)


FUNCTIONS = {
    "find_flights": find_flights,
    "book_hotel": book_hotel,
    "budget_calculator": budget_calculator,
    "max": max_,
    "min": min_,
    "sum": sum_,
}
# In code actions the original's `max` and `min` were the built-ins themselves (with `key=` and
# iterables); the sandbox's own built-ins behave identically, so these are not sent to it.
SANDBOX_BUILTINS = frozenset({"max", "min"})
