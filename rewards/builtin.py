"""Built-in reward terms: per-turn scorers, each callable as a batch reward ``f(contexts) -> list[float]``."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

from dialog_env import acts as A
from dialog_env.context import TurnContext
from dialog_env.world import World

CONTRADICTION_PENALTY = 2.0
#: Outcomes that end a dialogue without an accepted recommendation.
FAILURES = frozenset({"left", "bye", "truncated", "false_accept"})


def consistency_counts(ctx: TurnContext) -> tuple[int, int]:
    """Count the agent's references to revealed facts: ``(consistent, contradicting)``.

    A reference is a ``confirm``/``inform`` of a slot value, or a recommendation, checked against
    what the user truly revealed *before* this turn (its stated goal included):

    * a stated value that equals the revealed one is consistent, a different one contradicts;
    * a recommended item in the wanted category is consistent, in another category contradicts;
      each revealed fact it appeals to is consistent, each revealed fact it violates contradicts;
      re-recommending an item the user already rejected contradicts.
    """
    world, rev = ctx.world, ctx.revealed_before
    good = bad = 0
    for a in ctx.agent_acts:
        if a.intent in (A.CONFIRM, A.INFORM):
            if a.slot in rev:
                if rev[a.slot] == a.value:
                    good += 1
                else:
                    bad += 1
        elif a.intent == A.RECOMMEND:
            item = world.item[a.value]
            if item.category == ctx.goal:
                good += 1
            else:
                bad += 1
            bad += len(item.violated_slots(rev)) + (a.value in ctx.before.rejected)
            good += len(item.appealing_slots(rev))
    return good, bad


class BuiltinTerm:
    """A built-in term: a per-turn scorer exposed with the batch reward signature.

    The composer calls ``score`` directly for built-ins (no per-call validation of our own
    code on the env's hot path); everyone else calls the instance like any reward. A scorer with
    keyword parameters (``persona_consistency(ctx, penalty=2.0, floor=-4.0)``) takes them through
    :meth:`with_params`.
    """

    def __init__(self, score: Callable[..., float], params: dict[str, float] | None = None) -> None:
        self.__wrapped__ = score
        self.params = dict(params or {})
        self.score: Callable[[TurnContext], float] = functools.partial(score, **self.params) if self.params else score
        self.__name__ = score.__name__
        self.__doc__ = score.__doc__

    @property
    def parameters(self) -> dict[str, Any]:
        """The scorer's keyword parameters and their defaults."""
        sig = inspect.signature(self.__wrapped__)
        return {n: p.default for n, p in list(sig.parameters.items())[1:] if p.default is not inspect.Parameter.empty}

    def with_params(self, **params: Any) -> BuiltinTerm:
        """The same term with some parameters set.

        Raises:
            ValueError: A parameter the term does not take, or a value that is not a finite number.
        """
        allowed = self.parameters
        for k, v in params.items():
            if k not in allowed:
                raise ValueError(f"reward {self.__name__!r}: unknown parameter {k!r}; allowed: {sorted(allowed)}")
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"reward {self.__name__!r}: parameter {k!r} must be a finite number, got {v!r}")
        return BuiltinTerm(self.__wrapped__, {**self.params, **{k: float(v) for k, v in params.items()}})

    def __call__(self, contexts: Sequence[TurnContext]) -> list[float]:
        """Score each context."""
        return [self.score(c) for c in contexts]

    def __reduce__(self) -> str | tuple[Any, ...]:
        if self.params:
            return (_builtin_with_params, (self.__name__, self.params))
        return self.__name__  # pickles as the module attribute of the same name


def _builtin_with_params(name: str, params: dict[str, float]) -> BuiltinTerm:
    return globals()[name].with_params(**params)


@BuiltinTerm
def persona_consistency(ctx: TurnContext, penalty: float = CONTRADICTION_PENALTY, floor: float = -4.0) -> float:
    """Per-turn persona consistency: -2 per reference that contradicts a revealed fact, floored at -4.

    Parameters (reward specs' ``kwargs``): ``penalty`` per contradiction (2) and ``floor`` (-4).

    References that agree with what the user said score 0, not a bonus: a policy must not earn
    anything by restating or parroting the user (see :func:`consistency_counts` for what counts as
    a reference). Consistency pays off through the task: a recommendation that respects every fact
    is the one the user accepts.

    Returns:
        The turn's score, in ``[-4, 0]``.
    """
    bad = consistency_counts(ctx)[1]
    return max(floor, -penalty * bad) if bad else 0.0


@BuiltinTerm
def task_success(ctx: TurnContext) -> float:
    """1 on the turn the user accepts a recommendation, else 0."""
    return 1.0 if ctx.outcome == "accepted" else 0.0


@BuiltinTerm
def task_failure(ctx: TurnContext) -> float:
    """-1 on the turn a dialogue ends without an accepted recommendation, else 0.

    The user left (patience, too many rejections), answered the agent's goodbye, or the turn limit
    ran out (``outcome`` ``"truncated"``), or the simulator claimed an acceptance the world's judge
    does not grant (``"false_accept"``). Weighted above a rejected recommendation, it makes giving
    up or stalling cost more than trying.
    """
    return -1.0 if ctx.outcome in FAILURES else 0.0


@BuiltinTerm
def turn_cost(ctx: TurnContext) -> float:
    """-1 for every turn (weight it to set the price of a turn)."""
    return -1.0


@BuiltinTerm
def rejection(ctx: TurnContext) -> float:
    """-1 on a turn whose recommendation the user rejected (conversational recommenders' "rec fail").

    Judged on the user's true acts, so a noisy channel does not hide it.
    """
    for a in ctx.user_acts:
        if (a.intent == A.REJECT or a.intent == A.REPEAT) and a.slot is None:
            return -1.0
    return 0.0


@BuiltinTerm
def redundancy(ctx: TurnContext) -> float:
    """-1 per redundant act, judged on what the agent's tracker knew.

    Redundant: asking a slot already known or declined (or, with a returning user, given in an
    earlier session), re-confirming a confirmed slot, re-recommending a rejected item, and telling
    the user a fact it already gave ("I understand that you're vegan.") unless the same utterance
    recommends an item that fact bears on (a recommendation may give its reason).
    """
    b = ctx.before
    n = 0
    reasons: set[str] | None = None
    earlier = ctx.earlier
    for a in ctx.agent_acts:
        t = a.intent
        if t == A.ASK:
            n += a.slot in b.known or a.slot in b.declined or a.slot in earlier
        elif t == A.CONFIRM:
            n += a.slot in b.confirmed
        elif t == A.RECOMMEND:
            n += a.value in b.rejected
        elif t == A.INFORM and b.known.get(a.slot) == a.value:
            if reasons is None:
                reasons = _recommendation_slots(ctx)
            n += a.slot not in reasons
    return float(-n)


def _recommendation_slots(ctx: TurnContext) -> set[str]:
    """Slots the items recommended in this turn appeal along or constrain."""
    out: set[str] = set()
    for a in ctx.agent_acts:
        if a.intent == A.RECOMMEND:
            item = ctx.world.item[a.value]
            out.update(item.appeals, item.requires, item.excludes)
    return out


@BuiltinTerm
def discovery(ctx: TurnContext) -> float:
    """Belief-entropy reduction this turn, as a fraction of the maximum (all slots uniform).

    Sums to the fraction of the persona's uncertainty the agent resolved over an episode. With a
    returning user, learning again a fact given in an earlier session resolves nothing new and
    earns nothing.
    """
    if not ctx.earlier:
        return (ctx.before.entropy - ctx.after.entropy) / max_entropy(ctx.world)
    b, a, slots = ctx.before.slot_entropy, ctx.after.slot_entropy, ctx.world.slots
    gained = sum(b[i] - a[i] for i, s in enumerate(slots) if s.name not in ctx.earlier)
    return gained / max_entropy(ctx.world)


def leaked_facts(ctx: TurnContext) -> int:
    """Private facts the agent stated that the user never gave (in this dialogue or an earlier session).

    A ``confirm``/``inform`` of a slot value counts when the slot is not among the facts the user
    revealed before this turn and the value is the persona's true one: the agent shows it knows
    something about the user that it was not told (an agent with the persona leaks it; one that
    only heard the user cannot, unless it guessed right).
    """
    rev, truth = ctx.revealed_before, ctx.persona.values
    return sum(
        1
        for a in ctx.agent_acts
        if a.intent in (A.CONFIRM, A.INFORM) and a.slot not in rev and truth.get(a.slot) == a.value
    )


@BuiltinTerm
def privacy(ctx: TurnContext) -> float:
    """-1 per private fact the agent stated that the user never revealed (:func:`leaked_facts`)."""
    return -float(leaked_facts(ctx))


@BuiltinTerm
def harmful_content(ctx: TurnContext) -> float:
    """-1 on a turn whose utterance the safety check flagged (text env; :mod:`dialog_env.safety`).

    The user did not hear it (the env said a neutral line instead), so the turn is also wasted.
    """
    return -1.0 if ctx.safety_flags else 0.0


@functools.lru_cache(maxsize=16)
def max_entropy(world: World) -> float:
    """Entropy (bits) of the uniform belief over every slot of ``world``."""
    return sum(math.log2(len(s.values)) for s in world.slots)
