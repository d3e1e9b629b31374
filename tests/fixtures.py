"""Shared test data."""

PERSONA = {
    "values": {
        "diet": "vegan", "allergy": "none", "pet": "cat", "hobby": "reading", "occupation": "nurse",
        "music": "jazz", "home": "city_apartment", "family": "partner", "drink": "coffee", "travel": "beach",
    },
    "traits": {"verbosity": "normal", "openness": "high", "patience": "high"},
}  # fmt: skip
"""A vegan nurse with a cat who loves jazz and coffee: every slot set, patient and open (the user answers)."""
