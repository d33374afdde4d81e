"""Deterministic, realistic-looking evaluation conversations for seeding the emulator.

Content is drawn from a fixed pool of sentences built once at import, so a record
costs a handful of ``rng`` calls and 100,000 records seed in a few seconds.
"""

from __future__ import annotations

import functools
import gc
import random
from typing import Any

from localstore_emulator.state import EmulatorState

_TOPICS = [
    ("billing", "I was charged twice for my subscription this month"),
    ("login", "I can't log in since I changed my password"),
    ("refund", "I would like a refund for an order that arrived damaged"),
    ("shipping", "My parcel has been stuck in transit for a week"),
    ("api", "The API returns a 429 error even at low traffic"),
    ("account", "How do I transfer my account to a new email address"),
    ("bug", "The export button does nothing on the reports page"),
    ("pricing", "Is there a discount for annual plans for small teams"),
    ("privacy", "Please delete all personal data you hold about me"),
    ("integration", "The webhook stopped firing after your last update"),
]
_SYSTEM = [
    "You are a helpful, concise customer support assistant. Answer politely and precisely.",
    "You are a support agent for a software company. Never invent policies; escalate when unsure.",
    "You answer customer questions in the customer's language, citing the relevant help article.",
    "You are a friendly assistant. Keep answers short and list concrete next steps.",
]
_LABELS = ["resolved", "escalated", "needs_info", "refund_issued", "wont_fix"]
_SPLITS = ["train", "train", "train", "validation", "test"]
_LANGS = ["en", "en", "en", "fr", "de", "es", "it"]

_SUBJECTS = ["The customer", "Our team", "The invoice", "Your account", "The order", "This request",
             "The dashboard", "The support ticket", "The payment", "The new release"]
_VERBS = ["was updated", "needs to be reviewed", "has been escalated", "will be refunded",
          "was flagged by our system", "should be visible again", "requires a second check",
          "is scheduled for tomorrow", "was processed successfully", "could not be verified"]
_TAILS = ["within two business days.", "after the next billing cycle.", "once we confirm your identity.",
          "as described in the help center.", "and you will receive an email.", "for security reasons.",
          "by our operations team.", "without any further action from you.", "in the settings page.",
          "if the problem persists."]


def _sentence_pool(size: int = 512) -> list[str]:
    rng = random.Random(20_240_601)
    return [f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_TAILS)}" for _ in range(size)]


_SENTENCES = _sentence_pool()
_AVG_SENTENCE = sum(len(s) + 1 for s in _SENTENCES) / len(_SENTENCES)
_PER_MESSAGE_OVERHEAD = 34  # {"role":"assistant","content":""},
_FIXED_OVERHEAD = 150  # payload/properties keys and values
_MAX_SENTENCES = 16
_PARAGRAPHS_PER_SIZE = 256


@functools.cache
def _paragraphs() -> list[list[str]]:
    """For n = 1.._MAX_SENTENCES, a pool of paragraphs of n sentences."""
    rng = random.Random(7)
    return [
        [" ".join(rng.choices(_SENTENCES, k=n)) for _ in range(_PARAGRAPHS_PER_SIZE)]
        for n in range(1, _MAX_SENTENCES + 1)
    ]


def _text(rng: random.Random, chars: int) -> str:
    pools = _paragraphs()
    count = max(1, round(chars / _AVG_SENTENCE))
    parts = []
    while count > 0:
        size = min(count, _MAX_SENTENCES)
        parts.append(pools[size - 1][int(rng.random() * _PARAGRAPHS_PER_SIZE)])
        count -= size
    return " ".join(parts)


def make_record(i: int, rng: random.Random, approx_bytes: int = 1000) -> dict[str, Any]:
    """One support conversation of about ``approx_bytes`` serialized (system prompt,
    then alternating user/assistant turns) with label/split/score/lang properties."""
    draw = rng.random
    topic, opener = _TOPICS[int(draw() * len(_TOPICS))]
    system = _SYSTEM[int(draw() * len(_SYSTEM))]
    turns = 2 + 2 * int(draw() * 3)
    budget = approx_bytes - _FIXED_OVERHEAD - len(system) - len(opener) - 20
    per_turn = max(0, budget // turns - _PER_MESSAGE_OVERHEAD)
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Ticket #{i} ({topic}): {opener}. {_text(rng, per_turn)}"},
    ]
    for turn in range(1, turns):
        role = "assistant" if turn % 2 else "user"
        messages.append({"role": role, "content": _text(rng, per_turn)})
    return {
        "payload": {"messages": messages},
        "properties": {
            "label": _LABELS[int(draw() * len(_LABELS))],
            "split": _SPLITS[int(draw() * len(_SPLITS))],
            "score": round(draw(), 3),
            "lang": _LANGS[int(draw() * len(_LANGS))],
        },
    }


def seed_dataset(
    state: EmulatorState, n: int, name: str = "support-conversations", seed: int = 0
) -> str:
    """Create a dataset of ``n`` generated records (same ``seed``, same content); returns its id."""
    rng = random.Random(seed)
    dataset_id = state.create_dataset(name, f"{n} generated support conversations (seed {seed})")["id"]
    chunk = 10_000
    # 100k records mean millions of small objects: cyclic GC passes would double the time
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for start in range(0, n, chunk):
            batch = [make_record(i, rng) for i in range(start, min(n, start + chunk))]
            state.add_records(dataset_id, batch)
    finally:
        if was_enabled:
            gc.enable()
    return dataset_id
