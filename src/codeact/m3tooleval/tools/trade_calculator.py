"""The intergalactic trade calculator: currency conversion, tariffs, final values."""

from __future__ import annotations

from typing import Any

from codeact.m3tooleval.tools.calculator import calculator

Number = int | float


def convert_currency(base_price: Number, conversion_rate: Number) -> Number:
    """Converts the commodity price to local currency."""
    return base_price * conversion_rate


def calculate_tariff(price: Number, tariff_rate: Number) -> Number:
    """Calculates the trade tariff of a price; tariff_rate is in percent."""
    return price * tariff_rate / 100


def estimate_final_value(price: Number, tariff: Number) -> Number:
    """Estimates the final trade value including the tariff."""
    return price + tariff


def find_minimum(*args: Any) -> Any:
    """Finds the minimum value among the given arguments."""
    return min(args)


def find_maximum(*args: Any) -> Any:
    """Finds the maximum value among the given arguments."""
    return max(args)


FUNCTIONS = {
    "convert_currency": convert_currency,
    "calculate_tariff": calculate_tariff,
    "estimate_final_value": estimate_final_value,
    "calculator": calculator,
    "find_minimum": find_minimum,
    "find_maximum": find_maximum,
}
