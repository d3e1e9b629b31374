"""One embedder per vector env: the batcher merges concurrent calls, the service's vectors are the local
model's, and subprocess envs (Gymnasium's and SB3's) embed through one server process."""

from __future__ import annotations

import pickle
import threading
import time

import gymnasium as gym
import numpy as np
import pytest

import dialog_env  # noqa: F401 - registers the environments
from dialog_env.embedding_service import Batcher, EmbeddingService, needs_embedder
from dialog_env.envs.persona_rec_text import PersonaRecTextEnv
from dialog_env.nli import Embedder, check_embedder, load_detector, shared_embedder
from tests.fixtures import PERSONA
from tests.test_nli import CONSISTENT, MISSED_BY_RULES, TOLD

NLI_REWARD = {"nli_consistency": 1.0, "persona_consistency": 1.0}


class SlowEmbedder:
    """Vectors from sentence lengths; each call takes 0.2 s, so concurrent callers pile up."""

    dim = 2

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, texts):
        self.calls.append(list(texts))
        time.sleep(0.2)
        if self.fail:
            raise RuntimeError("model crashed")
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


def _call_together(batcher: Batcher, texts: list[list[str]]) -> list:
    out: list = [None] * len(texts)

    def run(i: int) -> None:
        try:
            out[i] = batcher.embed(texts[i], client=i)
        except RuntimeError as e:
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(texts))]
    threads[0].start()
    time.sleep(0.05)  # the first call is in its forward pass; the rest arrive while it runs
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join()
    return out


def test_batcher_embeds_callers_that_wait_in_one_pass():
    slow = SlowEmbedder()
    batcher = Batcher(slow)
    texts = [["a"], ["bb", "ccc"], ["dddd"], ["eeeee", "a"]]
    out = _call_together(batcher, texts)
    for sent, vecs in zip(texts, out, strict=True):
        np.testing.assert_array_equal(vecs[:, 0], [len(t) for t in sent])  # each caller gets its own rows
    assert len(slow.calls) == 2 and slow.calls[0] == ["a"]  # the three that waited went in one pass
    assert sorted(slow.calls[1]) == sorted(["bb", "ccc", "dddd", "eeeee", "a"])
    assert batcher.stats()["requests"] == 4 and batcher.stats()["passes"] == 2 and batcher.stats()["clients"] == 4


def test_batcher_gives_every_waiting_caller_the_error():
    batcher = Batcher(SlowEmbedder(fail=True))
    out = _call_together(batcher, [["a"], ["b"], ["c"]])
    assert all(isinstance(e, RuntimeError) and "model crashed" in str(e) for e in out)
    with pytest.raises(RuntimeError, match="model crashed"):  # and it does not hang afterwards
        batcher.embed(["d"])


def test_needs_embedder_reads_tracker_and_reward_terms():
    assert not needs_embedder({})
    assert not needs_embedder({"reward_weights": {"persona_consistency": 1.0}})
    assert needs_embedder({"reward_weights": NLI_REWARD})
    assert needs_embedder({"tracker": "learned"})


def test_bad_embedder_is_refused_by_name():
    with pytest.raises(TypeError, match="embedder must be callable"):
        PersonaRecTextEnv(embedder="localhost:1234")
    with pytest.raises(TypeError, match="embedder must be callable"):
        check_embedder(lambda texts: texts)  # no dim
    with pytest.raises(ValueError, match="threads must be"):
        EmbeddingService(threads=-1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh cache with the detector trained in it, which spawned env processes read (they inherit the variable)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DIALOG_ENV_CACHE", str(tmp_path_factory.mktemp("cache")))
    load_detector()
    yield
    mp.undo()


@pytest.fixture(scope="module")
def service():
    with EmbeddingService() as s:
        yield s


@pytest.mark.slow
def test_remote_vectors_are_the_local_models(service):
    sentences = ["I'm vegan.", "So you're not vegan.", "Do you have a cat?", "I'm vegan."]
    client = pickle.loads(pickle.dumps(service.client()))  # as a subprocess gets it
    np.testing.assert_allclose(client(sentences), Embedder()(sentences), atol=1e-5)
    assert client.dim == 384
    assert client(["So you're not vegan."]).shape == (1, 384)  # from its own cache: nothing sent
    assert service.stats()["sentences"] == 3


@pytest.mark.slow
def test_async_vector_env_envs_share_one_embedder(service, cache):
    """Two subprocess envs score the NLI term through the service, with the in-process rewards."""
    lines = MISSED_BY_RULES[:2] + CONSISTENT[:2]
    before = service.stats()
    envs = gym.make_vec(
        "dialog_env/PersonaRecText-v0",
        num_envs=2,
        vectorization_mode="async",
        vector_kwargs={"context": "spawn"},
        split="test",
        reward_weights=NLI_REWARD,
        embedder=service.client(),
    )
    got = []
    try:
        for a, b in zip(lines[::2], lines[1::2], strict=True):
            envs.reset(seed=3, options={"persona": PERSONA, "goal": "place", "earlier": TOLD})
            info = envs.step([a, b])[4]
            got += list(info["reward_terms"]["nli_consistency"])
    finally:
        envs.close()
    assert got == [-2.0 if line in MISSED_BY_RULES else 0.0 for line in lines]
    after = service.stats()
    assert after["clients"] - before["clients"] == 2  # the two env processes, one server
    assert after["sentences"] > before["sentences"] and after["pid"] == before["pid"]
    # Gymnasium built a first env here too (for its spaces): this process's default is untouched
    assert isinstance(shared_embedder(), Embedder)


@pytest.mark.slow
def test_an_env_embeds_through_its_own_embedder_only_during_its_steps(service, cache):
    client = service.client()
    own = PersonaRecTextEnv(split="test", reward_weights=NLI_REWARD, embedder=client)
    plain = PersonaRecTextEnv(split="test", reward_weights=NLI_REWARD)
    for env in (own, plain):
        env.reset(seed=3, options={"persona": PERSONA, "goal": "place", "earlier": TOLD})
        assert env.step(MISSED_BY_RULES[0])[4]["reward_terms"]["nli_consistency"] == -2.0
    assert client._cache and isinstance(shared_embedder(), Embedder)  # own's sentences went through the service
    again = pickle.loads(pickle.dumps(own))  # no connection (and no key) in a pickle
    assert again._embedder is None
    again.use_embedder(client)
    assert again.step("So you're not vegan.")[4]["reward_terms"]["nli_consistency"] == -2.0


@pytest.mark.slow
def test_sb3_subproc_training_envs_start_and_stop_a_service(cache, monkeypatch):
    import functools

    from stable_baselines3.common.vec_env import SubprocVecEnv

    from agents.sb3.config import VEC_ENVS, TrainConfig
    from agents.sb3.train import SharedEmbeddings, make_train_env

    # spawn, not SB3's forkserver: a forkserver started by an earlier test would not see this test's cache
    monkeypatch.setitem(VEC_ENVS, "subproc", functools.partial(SubprocVecEnv, start_method="spawn"))

    cfg = TrainConfig(env_id="dialog_env/PersonaRecText-v0", vec_env="subproc", reward_weights=NLI_REWARD)
    venv = make_train_env(cfg, n_envs=2, seed=0)
    try:
        assert isinstance(venv, SharedEmbeddings)
        venv.reset()
        for slot in range(3):  # ask three slots: facts revealed, then agent sentences to check against them
            venv.step(np.full(2, slot, dtype=np.int64))
        stats = venv.service.stats()
        assert stats["clients"] == 2 and stats["sentences"] > 0  # the two env processes
        blobs = venv.env_method("snapshot")
    finally:
        venv.close()
    with pytest.raises(RuntimeError, match="closed"):
        venv.service.client()
    restored = make_train_env(cfg, n_envs=2, seed=0, snapshots=blobs)  # resumed envs join a new service
    try:
        restored.step(np.zeros(2, dtype=np.int64))
        assert restored.service.stats()["clients"] == 2
    finally:
        restored.close()
    plain = make_train_env(TrainConfig(env_id="dialog_env/PersonaRecText-v0", vec_env="subproc"), n_envs=2, seed=0)
    plain.close()
    assert not isinstance(plain, SharedEmbeddings)  # no term embeds: no service
