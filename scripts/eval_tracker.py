"""The learned tracker beside the rule tracker: joint-goal accuracy on the same dialogues, and paraphrases.

    python scripts/eval_tracker.py --episodes 200 --noise 0 0.15 0.3 --lm-data runs/data_lmuser --out runs/tracker_eval

1. Held-out paraphrases (``dialog_env/data/paraphrases.yaml``: a fact in words the lexicon does not
   list): how often each tracker reads the fact (and nothing else).
2. Dialogues: the agent plays ``test`` personas with the rule tracker; a learned tracker beside it
   (a shadow) reads the same agent acts and the same heard user text. Per turn, a tracker is right
   when what it knows equals the facts the user truly revealed (joint-goal accuracy), at each
   noise level. Both trackers are judged on exactly the same turns.
4. Unchecked LM text (``--rewrite-data``): the LM user's rewrites of fact-stating template turns before
   verification, read by both NLUs against the template's facts (where paraphrases the lexicon
   misses actually occur).
3. LM-user text (``--lm-data``: ``dialog-env collect --user lm:<model>`` folders): each user
   sentence read by both NLUs, against the facts its template stated. The LM's rewrites are said
   only when the rule NLU reads them as the template, so the rule reading is right by construction
   there; the figure says whether the learned one is as good on an LM's words.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch


def shadow_jga(agent_spec: str, episodes: int, noise: float, split: str) -> dict[str, Any]:
    """Per-turn JGA of the env's rule tracker and of a learned tracker reading the same inputs."""
    from agents.base import make_agent
    from dialog_env.envs.persona_rec import PersonaRecEnv
    from dialog_env.tracker import DialogueStateTracker

    env = PersonaRecEnv(split=split, noise=noise)
    core = env.unwrapped
    shadow = DialogueStateTracker(core.world, "learned", core.lexicon)
    rule = core.tracker
    for name in ("reset", "update_agent", "update_user"):
        own, other = getattr(rule, name), getattr(shadow, name)

        def tee(*args: Any, _own: Any = own, _other: Any = other, **kwargs: Any) -> Any:
            _other(*args, **kwargs)
            return _own(*args, **kwargs)

        setattr(rule, name, tee)
    turns = rule_hits = learned_hits = 0
    for seed in range(episodes):
        agent = make_agent(agent_spec)
        obs, info = env.reset(seed=seed)
        agent.reset(env, seed=seed)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
            done = terminated or truncated
            truth = core.judge.revealed
            turns += 1
            rule_hits += rule.known() == truth
            learned_hits += shadow.known() == truth
    return {"turns": turns, "rule_jga": rule_hits / turns, "learned_jga": learned_hits / turns}


def lm_text(paths: list[str], dialogues: slice | None = None, reader: Any = None) -> dict[str, Any]:
    """Sentence-level reading of LM-user turns by both NLUs (labels: the lexicon's reading of the verified text)."""
    from dialog_env.learned_tracker import LearnedNLU, examples_from_data, load_reader, rule_facts
    from dialog_env.nlu import Lexicon, UserNLU
    from dialog_env.world import load_world

    world = load_world()
    rule, reader = UserNLU(Lexicon(world)), reader if reader is not None else load_reader(world)
    nlu = LearnedNLU(Lexicon(world), reader)
    examples = examples_from_data(paths, world, dialogues)
    rule_ok = learned_ok = tracker_ok = 0
    misses = []
    for e in examples:
        ruled = rule.parse(e.sentence, e.asked, None, None)
        rule_ok += rule_facts(ruled) == e.values
        learned_ok += set(reader.read(e.sentence, e.asked)) == set(e.values)
        tracked = set(nlu.facts(e.sentence, e.asked, ruled))
        tracker_ok += tracked == set(e.values)
        if tracked != set(e.values):
            misses.append({"sentence": e.sentence, "asked": e.asked, "want": sorted(e.values), "read": sorted(tracked)})
    n = max(1, len(examples))
    return {
        "sentences": len(examples),
        "rule_exact": rule_ok / n,
        "learned_exact": learned_ok / n,
        "tracker_exact": tracker_ok / n,
        "tracker_misses": misses,
    }


def lm_jga(paths: list[str], dialogues: slice | None = None, reader: Any = None) -> dict[str, Any]:
    """Joint-goal accuracy of both trackers' readings over the LM-user dialogues, turn by turn.

    The truth after each user turn is every fact stated so far, as the rule NLU reads the verified
    turns (the LM user says a turn only when the rule NLU reads its intended acts in it, so the rule
    tracker's JGA is 1 by construction and is not measured here); the learned tracker's state
    gathers :meth:`LearnedNLU.facts` of the same turns. A slot's later value replaces an earlier one.
    """
    import json

    from dialog_env import acts as A
    from dialog_env.learned_tracker import LearnedNLU, dialogue_lines, load_reader, user_turns
    from dialog_env.nlu import AgentNLU, Lexicon, UserNLU
    from dialog_env.world import load_world

    world = load_world()
    lexicon = Lexicon(world)
    rule, agent_nlu = UserNLU(lexicon), AgentNLU(lexicon)
    nlu = LearnedNLU(lexicon, reader if reader is not None else load_reader(world))
    turns = learned_hits = 0
    chosen = dialogue_lines(paths, dialogues)
    for line in chosen:
        truth: dict[str, str] = {}
        learned: dict[str, str] = {}
        for text, asked in user_turns(json.loads(line)["messages"], agent_nlu):
            ruled = rule.parse(text, asked, None, None)
            truth.update({a.slot: a.value for a in ruled if a.intent == A.INFORM and a.slot and a.value})
            learned.update(dict(nlu.facts(text, asked, ruled)))
            turns += 1
            learned_hits += learned == truth
    n = max(1, turns)
    return {"dialogues": len(chosen), "turns": turns, "learned_jga": learned_hits / n}


def lm_rewrites(paths: list[str], turns: int, model: str, batch: int, seed: int) -> dict[str, Any]:
    """Both NLUs on an LM's *unchecked* rewrites of template user turns (what a user LM says before verification).

    The fact-stating user turns of agenda-user dialogues (``collect`` folders) are rewritten by the
    LM user's prompt (the dialogue's persona, its verbosity, the worked paraphrases), one sample
    each. A reading is right when its informs equal the template's; an LM that drops or invents a
    fact makes both wrong alike.
    """
    import json

    from dialog_env.envs.persona_rec import PersonaRecEnv
    from dialog_env.learned_tracker import LearnedNLU, load_reader, rule_facts, user_turns
    from dialog_env.lm import GenerationConfig, generate_batch
    from dialog_env.nlu import AgentNLU, Lexicon, UserNLU
    from dialog_env.users.lm import LMUser
    from dialog_env.world import load_world

    world = load_world()
    lexicon = Lexicon(world)
    rule, agent_nlu, reader = UserNLU(lexicon), AgentNLU(lexicon), load_reader(world)
    nlu = LearnedNLU(lexicon, reader)
    lm_user = LMUser(world, model)
    envs: dict[str, Any] = {}
    jobs: list[tuple[Any, tuple[str, ...], frozenset[tuple[str, str]]]] = []
    rows = [json.loads(x) for p in paths for f in sorted(Path(p).glob("*.jsonl")) for x in f.read_text().splitlines()]
    for row in rows:
        env = envs.setdefault(row["split"], PersonaRecEnv(split=row["split"]))
        env.reset(seed=row["seed"])
        lm_user.persona = env.unwrapped.persona  # the LM is told the speaker's facts, as in the env
        for text, asked in user_turns(row["messages"], agent_nlu):
            facts = rule_facts(rule.parse(text, asked, None, None))
            if facts and len(jobs) < turns:
                jobs.append((lm_user.conversation(text), asked, facts))  # type: ignore[arg-type]
    model_, tokenizer = lm_user.lm
    config = GenerationConfig(max_new_tokens=48, do_sample=True, temperature=0.7)
    texts: list[str] = []
    for start in range(0, len(jobs), batch):
        chunk = [c for c, _, _ in jobs[start : start + batch]]
        texts += [" ".join(t.split()) for t in generate_batch(model_, tokenizer, chunk, config, seed + start)[0]]
    rows_out, rule_ok, learned_ok, tracker_ok, rule_miss, learned_on_miss, tracker_on_miss = [], 0, 0, 0, 0, 0, 0
    for text, (_, asked, facts) in zip(texts, jobs, strict=True):
        parsed = rule.parse(text, asked, None, None)
        ruled = rule_facts(parsed)
        learned = set(reader.read(text, asked))
        tracked = set(nlu.facts(text, asked, parsed))
        rule_ok += ruled == facts
        learned_ok += learned == facts
        tracker_ok += tracked == facts
        if ruled != facts:
            rule_miss += 1
            learned_on_miss += learned == facts
            tracker_on_miss += tracked == facts
        rows_out.append({"text": text, "asked": asked, "facts": sorted(facts), "rule": sorted(ruled),
                         "learned": sorted(learned), "tracker": sorted(tracked)})  # fmt: skip
    n = max(1, len(jobs))
    return {
        "turns": len(jobs),
        "rule_exact": rule_ok / n,
        "learned_exact": learned_ok / n,
        "tracker_exact": tracker_ok / n,
        "rule_misses": rule_miss,
        "learned_exact_where_rule_misses": learned_on_miss / max(1, rule_miss),
        "tracker_exact_where_rule_misses": tracker_on_miss / max(1, rule_miss),
        "rewrites": rows_out,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agent", default="planner", help="the agent that plays the dialogues")
    p.add_argument("--episodes", type=int, default=200, help="test dialogues per noise level")
    p.add_argument("--split", default="test")
    p.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.15, 0.3])
    p.add_argument("--lm-data", nargs="*", default=[], help="collect folders of dialogues with an LM user")
    p.add_argument(
        "--lm-dev-dialogues",
        type=int,
        default=0,
        help="the first N dialogues of --lm-data are validation data (for --choose-thresholds), the rest the test",
    )
    p.add_argument(
        "--lm-dev-data",
        nargs="*",
        default=[],
        help="collect folders of LM-user dialogues that are only validation data (for --choose-thresholds); "
        "every dialogue of --lm-data is then test data",
    )
    p.add_argument(
        "--choose-thresholds",
        action="store_true",
        help="choose the reader's thresholds on validation data (paraphrases_dev.yaml and the --lm-dev-dialogues) "
        "and report the test figures at the chosen pair as well",
    )
    p.add_argument("--rewrite-data", nargs="*", default=[], help="collect folders of agenda-user dialogues to rewrite")
    p.add_argument("--rewrite-turns", type=int, default=256, help="fact-stating user turns the LM rewrites")
    p.add_argument("--rewrite-model", default="smollm2", help="the user LM")
    p.add_argument("--rewrite-batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="folder for tracker_eval.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from dialog_env.learned_tracker import (
        SlotValueReader,
        choose_thresholds,
        examples_from_data,
        load_paraphrases,
        load_reader,
        paraphrase_report,
    )

    if args.lm_dev_dialogues < 0:
        p.error(f"--lm-dev-dialogues must be >= 0, got {args.lm_dev_dialogues}")
    if args.lm_dev_data and args.lm_dev_dialogues:
        p.error("--lm-dev-data and --lm-dev-dialogues: give one source of validation dialogues, not both")
    if args.choose_thresholds and not (args.lm_dev_data or (args.lm_data and args.lm_dev_dialogues)):
        p.error(
            "--choose-thresholds needs validation dialogues: --lm-dev-data FOLDER, or --lm-data FOLDER "
            "--lm-dev-dialogues N (N > 0)"
        )
    test_part = slice(args.lm_dev_dialogues, None) if args.lm_dev_dialogues else None
    reader = load_reader()
    result: dict[str, Any] = {
        "thresholds": {"threshold": reader.threshold, "value_threshold": reader.value_threshold},
        "paraphrases": paraphrase_report(reader),
        "dialogues": {},
    }
    if args.choose_thresholds:
        if args.lm_dev_data:
            dev_lm = examples_from_data(args.lm_dev_data, turns=True)
        else:
            dev_lm = examples_from_data(args.lm_data, dialogues=slice(0, args.lm_dev_dialogues), turns=True)
        choice = result["choice"] = choose_thresholds(reader, load_paraphrases(split="dev"), dev_lm)
        print(f"thresholds chosen on validation data ({choice['paraphrases']} dev paraphrases, "
              f"{choice['lm_examples']} LM-user turns, rule NLU exact on {choice['rule_lm_exact']}): "
              f"slot {choice['threshold']}, value {choice['value_threshold']} "
              f"(keeps up with the rule NLU: {choice['kept_up']})")  # fmt: skip
        print("\n| slot threshold | value threshold | dev paraphrases exact | dev LM-user turns exact |")
        print("|---|---|---|---|")
        for r in choice["sweep"]:
            print(f"| {r['threshold']} | {r['value_threshold']} | {r['paraphrases_exact']} | {r['lm_exact']} |")
        pair = choice["threshold"], choice["value_threshold"]
        chosen = SlotValueReader(reader.world, reader.head, reader.embedder, *pair)
        result["paraphrases_at_choice"] = paraphrase_report(chosen)
        para = result["paraphrases_at_choice"]
        print(f"\nat the chosen pair, held-out paraphrases: the learned tracker {para['tracker_recall']:.3f} "
              f"(exactly: {para['tracker_exact']:.3f})")  # fmt: skip
        if args.lm_data:
            r = result["lm_text_at_choice"] = lm_text(args.lm_data, test_part, chosen)
            print(f"at the chosen pair, LM-user test sentences: {r['sentences']}; rule exact {r['rule_exact']:.3f}, "
                  f"learned tracker exact {r['tracker_exact']:.3f}")  # fmt: skip
            r = result["lm_jga_at_choice"] = lm_jga(args.lm_data, test_part, chosen)
            print(f"at the chosen pair, LM-user test dialogues: {r['dialogues']} ({r['turns']} user turns); "
                  f"learned JGA {r['learned_jga']:.3f} (the rule's is 1 by construction)")  # fmt: skip
    para = result["paraphrases"]
    print(f"\nat the shipped thresholds ({reader.threshold}, {reader.value_threshold}):")
    print(f"held-out paraphrases ({para['paraphrases']}): rule reads {para['rule_paraphrase_recall']:.3f}, "
          f"the reader {para['paraphrase_recall']:.3f} (exactly: {para['paraphrase_exact']:.3f}), "
          f"the learned tracker {para['tracker_recall']:.3f} (exactly: {para['tracker_exact']:.3f})")  # fmt: skip
    print("\n| noise | turns | rule JGA | learned JGA |\n|---|---|---|---|")
    for noise in args.noise:
        r = shadow_jga(args.agent, args.episodes, noise, args.split)
        result["dialogues"][str(noise)] = r
        print(f"| {noise} | {r['turns']} | {r['rule_jga']:.3f} | {r['learned_jga']:.3f} |")
    if args.lm_data:
        r = result["lm_text"] = lm_text(args.lm_data, test_part)
        print(f"\nLM-user test sentences: {r['sentences']}; rule exact {r['rule_exact']:.3f}, "
              f"reader exact {r['learned_exact']:.3f}, learned tracker exact {r['tracker_exact']:.3f}")  # fmt: skip
        r = result["lm_jga"] = lm_jga(args.lm_data, test_part)
        print(f"LM-user test dialogues: {r['dialogues']} ({r['turns']} user turns); learned JGA "
              f"{r['learned_jga']:.3f} (the rule's is 1 by construction)")  # fmt: skip
    if args.rewrite_data:
        r = result["lm_rewrites"] = lm_rewrites(
            args.rewrite_data, args.rewrite_turns, args.rewrite_model, args.rewrite_batch, seed=0
        )
        print(f"\nunchecked LM rewrites of {r['turns']} fact-stating user turns: rule exact {r['rule_exact']:.3f}, "
              f"reader exact {r['learned_exact']:.3f}, learned tracker exact {r['tracker_exact']:.3f}; where the "
              f"rule NLU misreads ({r['rule_misses']} turns) the reader is right in "
              f"{r['learned_exact_where_rule_misses']:.3f}, the learned tracker in "
              f"{r['tracker_exact_where_rule_misses']:.3f}")  # fmt: skip
    if args.out:
        from dialog_env.io import atomic_write_json

        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(args.out) / "tracker_eval.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
