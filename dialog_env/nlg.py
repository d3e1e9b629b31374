"""Template natural-language generation for both sides of the dialogue.

Every act has at least three phrasings; the user's are shaped by the persona's verbosity. Choices
come from a ``random.Random`` the environment derives from its ``np_random``, so a seed fixes the
wording too.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from dialog_env import acts as A
from dialog_env.acts import DialogueAct
from dialog_env.world import World

AGENT_TEMPLATES: dict[str, tuple[str, ...]] = {
    A.CONFIRM: ("So {you}, right?", "Just to check, {you}?", "If I remember correctly, {you}, is that right?"),
    A.INFORM: ("I understand that {you}.", "Noted: {you}.", "Since {you}, I'll keep that in mind."),
    A.RECOMMEND: ("How about {name}?", "I'd recommend {name}.", "You might enjoy {name}."),
    A.CHITCHAT: ("How is your day going?", "Lovely weather lately, isn't it?", "I hope your week is going well."),
    A.BYE: ("Goodbye!", "Thanks for chatting. Bye!", "Take care, goodbye."),
}

USER_TEMPLATES: dict[str, tuple[str, ...]] = {
    "request": (
        "Hi! Can you help me find {noun}?",
        "Hello, I'm looking for {noun}.",
        "Hey there. I need {noun}, any ideas?",
    ),
    "request_terse": ("Looking for {noun}.", "Need {noun}.", "{Noun}, please."),
    "inform_terse": ("{Short}.", "Well, {short}.", "Oh, {short}."),
    "inform": ("{fact}.", "Well, {fact}.", "Good question. {fact}."),
    "inform_chatty": (
        "{fact}. It's a big part of my life.",
        "Oh, {fact}! Thanks for asking.",
        "{fact}. I could talk about it for hours.",
    ),
    "volunteer": ("Also, {fact}.", "And by the way, {fact}.", "Oh, and {fact}."),
    "decline": (
        "I'd rather not say.",
        "I'd prefer not to talk about my {noun}.",
        "Let's skip that one, if you don't mind.",
    ),
    "reject_reason": (
        "{name} won't work for me. {fact}.",
        "Hmm, no. {fact}, so {name} is not for me.",
        "Not {name}, sorry. {fact}.",
    ),
    "reject_category": (
        "{name} isn't what I'm after. I'm looking for {noun}.",
        "No, not {name}. I need {noun}.",
        "Sorry, {name} is no good. I want {noun}.",
    ),
    "reject_vague": (
        "Hmm, {name} is not quite what I had in mind.",
        "Not {name}, sorry. Something else?",
        "No, {name} is not really my thing.",
    ),
    "reject_again": ("I already said no to {name}.", "No, {name} still won't work.", "Not {name}, I told you."),
    "accept": (
        "{name} sounds perfect, thank you!",
        "Great idea, I'll go with {name}!",
        "I love it. {name} it is, thanks!",
    ),
    "affirm": ("Yes, that's right.", "Exactly.", "Correct."),
    "negate": ("No, actually {fact}.", "Not quite. {fact}.", "Nope, {fact}."),
    "repeat": ("I already told you: {fact}.", "As I said, {fact}.", "Like I mentioned, {fact}."),
    "chitchat": (
        "Sure. Anyway, I'm looking for {noun}.",
        "Ha, yes. Could we focus on finding {noun}?",
        "Fine, thanks. So, about {noun}?",
    ),
    "bye_left": (
        "Sorry, I have to go. Bye.",
        "This is taking too long. Goodbye.",
        "Never mind, I'll figure it out myself. Bye.",
    ),
    "bye": ("Bye!", "Goodbye then.", "OK, bye."),
    "bye_accepted": ("Thanks again, bye!", "Bye, and thanks!", "Have a good one, bye!"),
}


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


class AgentNLG:
    """Renders agent acts as an utterance (act mode's transcript, text-mode templates)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def render(self, acts: Sequence[DialogueAct], rng: random.Random) -> str:
        """Render agent acts, one sentence each, joined by spaces."""
        parts = []
        for act in acts:
            if act.intent == A.ASK:
                parts.append(rng.choice(self.world.slot[act.slot].questions))
            elif act.intent in (A.CONFIRM, A.INFORM):
                you = self.world.value(act.slot, act.value).you
                parts.append(rng.choice(AGENT_TEMPLATES[act.intent]).format(you=you))
            elif act.intent == A.RECOMMEND:
                name = self.world.item[act.value].name
                parts.append(rng.choice(AGENT_TEMPLATES[A.RECOMMEND]).format(name=name))
            elif act.intent in AGENT_TEMPLATES:
                parts.append(rng.choice(AGENT_TEMPLATES[act.intent]))
        return " ".join(parts)


class UserNLG:
    """Renders user acts; ``reject``/``negate``/``repeat`` take the following act as their reason."""

    def __init__(self, world: World) -> None:
        self.world = world

    def render(self, acts: Sequence[DialogueAct], verbosity: str, rng: random.Random) -> str:
        """Render a user turn.

        Args:
            acts: The user's acts for this turn.
            verbosity: ``terse``, ``normal`` or ``chatty``.
            rng: The random source for phrasing choices.
        """
        w = self.world
        parts: list[str] = []
        i = 0
        answered = False
        while i < len(acts):
            act = acts[i]
            nxt = acts[i + 1] if i + 1 < len(acts) else None
            t = act.intent
            if t == A.REQUEST:
                key = "request_terse" if verbosity == "terse" else "request"
                noun = w.category[act.value].noun
                parts.append(rng.choice(USER_TEMPLATES[key]).format(noun=noun, Noun=_cap(noun)))
            elif t == A.INFORM:
                v = w.value(act.slot, act.value)
                if answered:
                    parts.append(rng.choice(USER_TEMPLATES["volunteer"]).format(fact=v.fact))
                else:
                    key = {"terse": "inform_terse", "chatty": "inform_chatty"}.get(verbosity, "inform")
                    parts.append(
                        rng.choice(USER_TEMPLATES[key]).format(fact=v.fact, short=v.short, Short=_cap(v.short))
                    )
                answered = True
            elif t == A.DECLINE:
                parts.append(rng.choice(USER_TEMPLATES["decline"]).format(noun=w.slot[act.slot].noun))
                answered = True
            elif t in (A.REJECT, A.NEGATE, A.REPEAT):
                name = w.item[act.value].name if act.value in w.item else ""
                if nxt is not None and nxt.intent == A.INFORM:
                    key = {A.REJECT: "reject_reason", A.NEGATE: "negate", A.REPEAT: "repeat"}[t]
                    parts.append(
                        rng.choice(USER_TEMPLATES[key]).format(name=name, fact=w.value(nxt.slot, nxt.value).fact)
                    )
                    i += 1
                elif nxt is not None and nxt.intent == A.REQUEST:
                    noun = w.category[nxt.value].noun
                    parts.append(rng.choice(USER_TEMPLATES["reject_category"]).format(name=name, noun=noun))
                    i += 1
                else:
                    key = "reject_again" if t == A.REPEAT else "reject_vague"
                    parts.append(rng.choice(USER_TEMPLATES[key]).format(name=name))
                answered = True
            elif t == A.ACCEPT:
                parts.append(rng.choice(USER_TEMPLATES["accept"]).format(name=w.item[act.value].name))
            elif t == A.AFFIRM:
                parts.append(rng.choice(USER_TEMPLATES["affirm"]))
                answered = True
            elif t == A.CHITCHAT:
                noun = w.category[act.value].noun
                parts.append(rng.choice(USER_TEMPLATES["chitchat"]).format(noun=noun))
            elif t == A.BYE:
                key = {"left": "bye_left", "accepted": "bye_accepted"}.get(act.value or "", "bye")
                parts.append(rng.choice(USER_TEMPLATES[key]))
            i += 1
        return " ".join(parts)
