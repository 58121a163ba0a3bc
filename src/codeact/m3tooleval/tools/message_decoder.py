"""Message decoding tools: hex to ASCII, reversal, Caesar decoding, lengths, min and max."""

from __future__ import annotations

from typing import Any


def convert_hex_to_ascii(hex_string: str) -> str:
    """Converts a hexadecimal string to ASCII."""
    return bytes.fromhex(str(hex_string)).decode("utf-8")


def reverse_string(string: str) -> str:
    """Reverses a string."""
    return string[::-1]


def _shift_back(char: str, shift: int) -> str:
    if char.isupper():
        return chr((ord(char) - shift - ord("A")) % 26 + ord("A"))
    if char.islower():
        return chr((ord(char) - shift - ord("a")) % 26 + ord("a"))
    return char


def caesar_decode(message: str, shift: int) -> str:
    """Decodes a string using the Caesar cipher."""
    shift = int(shift)
    return "".join(_shift_back(char, shift) for char in message)


def string_length(string: str) -> int:
    """Finds the length of a string."""
    return len(string)


def minimum_value(*args: Any) -> Any:
    """Finds the minimum value from given arguments."""
    return min(args)


def maximum_value(*args: Any) -> Any:
    """Finds the maximum value from given arguments."""
    return max(args)


FUNCTIONS = {
    "convert_hex_to_ascii": convert_hex_to_ascii,
    "reverse_string": reverse_string,
    "caesar_decode": caesar_decode,
    "string_length": string_length,
    "minimum_value": minimum_value,
    "maximum_value": maximum_value,
}
