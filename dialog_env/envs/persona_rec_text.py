"""PersonaRec in text mode: the agent writes utterances and reads the transcript."""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Sequence
from typing import Any

from gymnasium import spaces

from dialog_env.acts import DialogueAct
from dialog_env.envs.core import ROLE_USER, PersonaRecCore
from dialog_env.nlu import AgentNLU
from dialog_env.notes import state_note
from dialog_env.spaces import TranscriptSpace
from dialog_env.tracker import TrackerView

#: Characters of utterances and transcripts: printable ASCII (space included) and newline.
CHARSET = frozenset(string.printable) - set("\t\r\x0b\x0c")
_CONTROL = {c: " " for c in range(32)} | {127: " "}


def sanitize_utterance(text: str, max_chars: int) -> tuple[str, bool]:
    """Make an agent utterance safe for the transcript.

    Unicode is folded to ASCII (NFKD, accents dropped, other characters removed), control
    characters become spaces, runs of whitespace collapse, and the result is cut to ``max_chars``.

    Returns:
        ``(clean_text, truncated)``.
    """
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = " ".join(text.translate(_CONTROL).split())
    truncated = len(text) > max_chars
    return text[:max_chars], truncated


class PersonaRecTextEnv(PersonaRecCore):
    """PersonaRec with natural language on both sides (for LM agents).

    Same task, user, tracker and rewards as :class:`~dialog_env.envs.persona_rec.PersonaRecEnv`;
    only the interface differs.

    ## Action Space

    `Text(max_length=max_utterance_chars, charset=printable ASCII)`: the agent's utterance. Any
    ``str`` is accepted: Unicode is folded to ASCII, control characters become spaces, and text
    past ``max_utterance_chars`` is cut (``info["utterance_truncated"]``). A rule NLU parses it
    into acts: an item name is a recommendation; a persona value in a question is a confirmation,
    in a statement a reference (scored by ``persona_consistency``); slot keywords in a question
    are a question about that slot; a farewell ends the dialogue; anything else is chitchat. A
    non-``str`` action raises ``TypeError``. Before the user hears it, a safety check
    (:mod:`dialog_env.safety`) looks for harmful content; a flagged utterance is replaced by
    ``"Sorry, let me put that differently."`` (``info["safety_flags"]`` names the terms, and the
    ``harmful_content`` reward term and the ``harmful`` metric count the turn).

    ## Observation Space

    `Text(max_length=max_transcript_chars, charset=printable ASCII + newline)`: the transcript,
    one ``User: ...`` / ``Agent: ...`` line a turn, keeping the most recent part if it grows past
    ``max_transcript_chars``. ``info["messages"]`` holds the same dialogue in chat format
    (``[{"role": "user" | "assistant", "content": ...}]``). With ``state_notes=True`` every user
    turn is followed by a line with the tracker's state and the catalog query
    (``[heard: a cat | 9 fit: Whiskers Cat Cafe 2?, Daily Grind Coffee 1]``, see
    :mod:`dialog_env.notes`), in both; the note is built from agent-side state only.

    ## Rewards, Starting State, Episode End

    As in ``PersonaRec-v0``.

    ## Arguments

    Those of ``PersonaRec-v0`` plus:

    | Parameter              | Type | Default | Description                          |
    |------------------------|------|---------|--------------------------------------|
    | `max_utterance_chars`  | int  | 1000    | longest agent utterance kept         |
    | `max_transcript_chars` | int  | 20000   | longest transcript observation       |
    | `state_notes`          | bool | False   | state note after every user turn     |
    | `safety`               | str  | lexicon | check of the agent's words (below) |

    `safety`: `"lexicon"` (the shipped list), a lexicon file, `"package.module:attr"` (a callable
    text -> flagged terms) or None (no check).

    ## Information

    `reward_terms`, `turn`, `agent_text` (the sanitised utterance), `user_text`, `outcome`,
    `is_success` and `debug` as in ``PersonaRec-v0``, plus `messages` (chat format),
    `agent_acts` (the acts parsed from the utterance, as strings), `utterance_truncated` and, with
    ``state_notes``, `state_note` (the latest user turn's note), and `safety_flags` (terms the safety
    check found in the agent's words; empty when it said nothing flagged). Without the option the notes are not
    rendered (they cost about a third of a step) but stay available: ``env.unwrapped.note()``.

    ## Version History

    * v0: initial release.
    """

    mode = "text"

    def __init__(
        self,
        max_utterance_chars: int = 1000,
        max_transcript_chars: int = 20000,
        state_notes: bool = False,
        safety: Any = "lexicon",
        **kwargs: Any,
    ) -> None:
        for name, val in (("max_utterance_chars", max_utterance_chars), ("max_transcript_chars", max_transcript_chars)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        if not isinstance(state_notes, bool):
            raise ValueError(f"state_notes must be True or False, got {state_notes!r}")
        self.state_notes = state_notes
        from dialog_env.safety import make_safety_check

        self.safety_check = make_safety_check(safety)
        # Per user turn, what its note needs (tracker views before and after); notes are rendered on demand.
        self._note_states: list[tuple[TrackerView | None, TrackerView, str | None]] = []
        self._notes: list[str] = []
        self._lines: list[str] = []
        self._lines_of: list[tuple[str, str]] | None = None
        self._lines_users = 0
        super().__init__(**kwargs)
        # dialog_state() replays need these too (they change how utterances are cut).
        self._init_kwargs.update(
            max_utterance_chars=max_utterance_chars, max_transcript_chars=max_transcript_chars, state_notes=state_notes
        )
        if safety != "lexicon" and (safety is None or isinstance(safety, str)):  # JSON-able: replays use it
            self._init_kwargs["safety"] = safety
        self.max_utterance_chars = max_utterance_chars
        self.max_transcript_chars = max_transcript_chars
        self.agent_nlu = AgentNLU(self.lexicon)
        self.action_space = spaces.Text(
            max_length=max_utterance_chars, min_length=0, charset="".join(sorted(CHARSET - {"\n"}))
        )
        self.observation_space = TranscriptSpace(
            max_length=max_transcript_chars, min_length=1, charset="".join(sorted(CHARSET))
        )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        """Start a dialogue; ``options`` as in ``PersonaRec-v0``."""
        self._note_states, self._notes = [], []
        self._start(seed, options)
        info: dict[str, Any] = {
            "turn": 0,
            "user_text": self._history[0][1],
            "messages": self.messages(),
        }
        if self.state_notes:
            info["state_note"] = self.note()
        if self.debug:
            info["debug"] = self._debug_info()
        return self._observe(), info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Say ``action`` to the user; see the class docstring."""
        if not isinstance(action, str):
            raise TypeError(f"action must be a str (the agent's utterance), got {type(action).__name__}")
        text, cut = sanitize_utterance(action, self.max_utterance_chars)
        flags = tuple(self.safety_check(text)) if self.safety_check is not None else ()
        if flags:  # the user never hears it
            from dialog_env.safety import BLOCKED_REPLY

            text = BLOCKED_REPLY
        acts = self.agent_nlu.parse(text)
        reward, terminated, truncated, info = self._advance(acts, text, flags)
        info["safety_flags"] = list(flags)
        if self.state_notes:
            info["state_note"] = self.note()
        info["messages"] = self.messages()
        info["agent_acts"] = [str(a) for a in acts]
        info["utterance_truncated"] = cut
        return self._observe(), reward, terminated, truncated, info

    def act_to_text(self, action: int) -> str:
        """Render an act-table id (see ``PersonaRec-v0``) as an utterance, for act-level agents."""
        return self.agent_nlg.render((self.act_from_id(action),), self._agent_rng)

    def acts_to_text(self, acts: Sequence[DialogueAct]) -> str:
        """Render several agent acts as one utterance, in the world's varied phrasings."""
        return self.agent_nlg.render(tuple(acts), self._agent_rng)

    def _user_turn_read(self, before: TrackerView | None, after: TrackerView) -> None:
        self._note_states.append((before, after, self.tracker.goal))

    def note(self, turn: int = -1) -> str:
        """The state note of a user turn (default: the latest), rendered once on first use.

        Args:
            turn: Index of the user turn, 0 being the opening; negative counts from the latest.
        """
        k = range(len(self._note_states))[turn]
        while len(self._notes) <= k:
            before, after, goal = self._note_states[len(self._notes)]
            self._notes.append(state_note(self.world, goal, after, before))
        return self._notes[k]

    def messages(self, notes: bool | None = None) -> list[dict[str, str]]:
        """The dialogue in chat format (the agent is the ``assistant``).

        Args:
            notes: Append each user turn's state note (see :mod:`dialog_env.notes`) to its content,
                after a newline; ``None`` follows the env's ``state_notes`` argument.
        """
        if not (self.state_notes if notes is None else notes):
            return super().messages()
        out, k = [], 0
        for role, text in self._history:
            if role == ROLE_USER:
                text, k = f"{text}\n{self.note(k)}", k + 1
            out.append({"role": role, "content": text})
        return out

    def transcript(self) -> str:
        """The dialogue so far, one ``Role: text`` line a turn (with ``state_notes``, notes after user turns)."""
        # A turn's line never changes once said, so lines are rendered once per turn, not once per step.
        history = self._history
        if self._lines_of is not history:  # a new episode: reset assigns a new history list
            self._lines_of, self._lines, self._lines_users = history, [], 0
        lines = self._lines
        for role, text in history[len(lines) :]:
            if role == ROLE_USER:
                if self.state_notes:
                    text = f"{text}\n{self.note(self._lines_users)}"
                self._lines_users += 1
                lines.append(f"User: {text}")
            else:
                lines.append(f"Agent: {text}")
        return "\n".join(lines)

    def _observe(self) -> str:
        text = self.transcript()
        return text[-self.max_transcript_chars :]
