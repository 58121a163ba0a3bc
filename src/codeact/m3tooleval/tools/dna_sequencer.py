"""The cryptobotanist's plant DNA sequencer: counting, transcription, translation, validation."""

from __future__ import annotations

from collections import Counter
from typing import Any

_TRANSCRIBE = str.maketrans("ACGT", "UGCA")
_REVERSE_TRANSCRIBE = str.maketrans("UCAG", "AGTC")
_CODONS = {"AUG": "Methionine", "UUU": "Phenylalanine", "UUC": "Phenylalanine"}


def count_nucleotides(dna_sequence: str) -> dict[str, int]:
    """Counts the occurrences of each nucleotide, in order of first appearance."""
    return dict(Counter(dna_sequence))


def transcribe_dna_to_mrna(dna_sequence: str) -> str:
    """Transcribes a DNA sequence to mRNA (A->U, C->G, G->C, T->A)."""
    return dna_sequence.translate(_TRANSCRIBE)


def translate_mrna_to_amino_acid(mrna_sequence: str) -> str:
    """Translates mRNA codon by codon to amino acids joined by '-'; unknown codons become 'X'."""
    codons = (mrna_sequence[i : i + 3] for i in range(0, len(mrna_sequence), 3))
    return "-".join(_CODONS.get(codon, "X") for codon in codons)


def find_max_nucleotide(*args: Any) -> tuple[Any, Any]:
    """The nucleotide with the highest count, from arguments (k1, v1, k2, v2, ...)."""
    counts = dict(zip(args[::2], args[1::2], strict=False))
    best = max(counts, key=counts.__getitem__)
    return (best, counts[best])


def is_valid_dna_sequence(dna_sequence: str) -> bool:
    """Whether the sequence holds only A, C, G and T."""
    return set(dna_sequence) <= set("ACGT")


def reverse_transcribe_mrna_to_dna(mrna_sequence: str) -> str:
    """Reverse transcribes mRNA to DNA (U->A, C->G, A->T, G->C)."""
    return mrna_sequence.translate(_REVERSE_TRANSCRIBE)


FUNCTIONS = {
    "count_nucleotides": count_nucleotides,
    "transcribe_dna_to_mrna": transcribe_dna_to_mrna,
    "translate_mrna_to_amino_acid": translate_mrna_to_amino_acid,
    "find_max_nucleotide": find_max_nucleotide,
    "is_valid_dna_sequence": is_valid_dna_sequence,
    "reverse_transcribe_mrna_to_dna": reverse_transcribe_mrna_to_dna,
}
