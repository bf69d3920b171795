"""``python -m benchmarks.blind_probe``: how well a curious lab names the policies behind slots A and B.

    python -m benchmarks.blind_probe [--quick] [--sessions 24] [--warmup 24] [--seed 7] [--json out.json]

Stands the network up on this machine (:mod:`benchmarks.blind_probe_network`: Django on SQLite, the blind relay,
seven policy servers from four owners on loopback, an honest lab that fills the public comparisons log), then
plays an adversarial lab that has nothing but its API key, HTTP and websockets: no database, no server
internals, no relay secret. For each of ``--sessions`` sessions it requests a pair, looks at both slots, and
writes down, per channel, the policy it believes is in each slot BEFORE it votes (every fourth session it
aborts blaming slot A instead of voting). The reveal after the vote scores the guesses and teaches the
adversary; aborted sessions reveal nothing to it and are scored from the harness's database.

Channels (each its own predictor; a channel that yields no information abstains, it never guesses):

``errors``         two side connections on the slot's token send a request with an unknown endpoint and an
                   observation missing ``replica/state``; the text frames and close reasons that come back are
                   matched against the public policy names and slugs (``GET /api/v1/policies/``) and against
                   the error signatures learned from revealed sessions.
``reply``          metadata keys beyond the run requirements, reply keys beyond ``actions`` and
                   ``server_timing.infer_ms``, and text frames during inference: public-name match, then learned
                   signatures.
``fingerprint``    the slot's answers to a fixed observation (a reset, then the observation twice: equal answers
                   mean a deterministic policy) against the answers recorded in revealed sessions: an exact
                   match, else (random policies) the reference whose answers scatter alike.
                   A lab can always do this to a deterministic policy; it is expected to REMAIN.
``token-replay``   the tokens of revealed sessions are kept and replayed now with the same fixed observation;
                   the slot's answers are matched against those (works only while ended sessions' tokens live).
``pair``           the public comparisons log of the newest snapshot fed to the open-source ``ranking.PairSampler``
                   as the server does, over the policies eligible for our robot by their public requirements.
``pair+reqs``      the same, keeping only pairs whose public requirements equal each slot's requirements.
``requirements``   the slot's requirement values (session view, and those in the relay's metadata frame)
                   against the values seen in revealed slots (exact values beyond the coarse public ones).
``abort-oracle``   (aborted sessions, slot A) after aborting with ``fault=policy_a``, the public policy pages and
                   API details are polled for ``--oracle-wait`` seconds; the policy whose health line changed.
                   (A re-check jittered beyond that window, with a coarse public time, goes unseen.)
``token-length``   the relay token's length against the lengths seen for revealed policies.
``timing``         ``server_timing.infer_ms`` and the round-trip time (log scale, Gaussian per policy) against
                   revealed sessions and the check latencies printed on the public policy pages.
``combined``       all of the above: a posterior over ordered pairs, the ``pair+reqs`` prior times each channel's
                   distribution, each shrunk towards uniform by that channel's accuracy on earlier revealed
                   slots (so a channel no better than chance counts for nothing).

The table gives, per channel: slots predicted (of all slots seen), correct, accuracy on the predicted slots with
a Clopper-Pearson 95% interval, and chance (1 / number of eligible policies). Below it: token lifetime (tokens
still answering after the vote or abort, on replay later, concurrent connections on one token, a token of a
revoked key) and how often the public data reproduced the pair probability the server stored.

Runs against whatever code is checked out: hardening that closes a channel makes it abstain (no crash).
What the probe relies on changing is looked up, not assumed: a fresh relay address is fetched from the session
before every connection (tokens may be short-lived or session-bound), connections on one slot are made one at a
time (a 409 "slot busy" is retried), ``serve_relay_in_thread`` gets the web server's URL if it takes
``arena_url`` (relay admission through the arena), and ``ARENA_ENDPOINT_ALLOW`` defaults to ``loopback``
(the policy servers listen on 127.0.0.1) unless the environment sets it. ``ARENA_PORT_RANGE`` confines the
ports. Guesses differ between runs (the server draws pairs and slot order with its own randomness): read the
intervals. ``--quick`` (12 sessions, a shorter warm-up) takes well under 3 minutes (~40 s on 2 busy cores),
the default run about a minute.

Typical use (before and after a change)::

    ARENA_PORT_RANGE=17000-17999 python -m benchmarks.blind_probe --json probe.json > probe.txt
"""

from __future__ import annotations

import argparse
import html
import json
import math
import random
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import requests

Distribution = dict[str, float]
SLOTS = ("A", "B")
FIXED_SEED = 20261201
UNKNOWN_ENDPOINT = "probe-unknown-endpoint"
RESET = {"endpoint": "reset"}
"""Sent before the fixed observation: a policy with episode state (the confused baseline's target) draws it
anew, so that it no longer answers exactly like the policy it differs from only in some episodes."""
EXPECTED_REPLY_KEYS = frozenset({"actions", "server_timing"})
EXPECTED_TIMING_KEYS = frozenset({"infer_ms"})
PROTOCOL_MARKERS = frozenset({"arena_protocol", "arena_relay"})
REQUIREMENT_KEYS = frozenset(
    {
        "platform",
        "image_resolution",
        "n_external_cameras",
        "needs_wrist_camera",
        "needs_stereo_camera",
        "needs_session_id",
        "action_space",
        "action_dim",
        "action_horizon",
        "needs_replica_state",
    }
)
"""What a lab needs to run a policy (RoboArena's config keys and the arena's): values a lab may see."""
CHANNELS = (
    "errors",
    "reply",
    "fingerprint",
    "token-replay",
    "pair",
    "pair+reqs",
    "requirements",
    "abort-oracle",
    "token-length",
    "timing",
    "combined",
)
SHORT_NAMES = {
    "requirements": "reqs",
    "fingerprint": "fingerpr.",
    "token-replay": "replay",
    "abort-oracle": "abort",
    "token-length": "length",
}
RECV_TIMEOUT_S = 10.0
MATCH_TEMPERATURE = 0.25
"""Softness of the match of a random slot's answers, in units of log distance ratio."""
BUSY_RETRIES = 4


# ------------------------------------------------------------------------------------------------ the wire


@dataclass
class Exchange:
    """What one websocket connection to the relay gave: handshake refusal, frames, close code and reason."""

    refused: str | None = None
    metadata: dict[str, Any] | None = None
    replies: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    rtt_ms: list[float] = field(default_factory=list)
    close: str = ""

    @property
    def answered(self) -> bool:
        return any(_actions(r) is not None for r in self.replies)


def _decode(frame: bytes) -> Any:
    from policy_server import wire

    try:
        return wire.unpackb(frame)
    except wire.WireError:
        return None


def _actions(reply: dict[str, Any]) -> np.ndarray | None:
    actions = reply.get("actions") if isinstance(reply, dict) else None
    return np.asarray(actions) if isinstance(actions, np.ndarray) else None


def talk(url: str, frames: list[dict[str, Any]]) -> Exchange:
    """Connect to ``url`` (a relay address), read the metadata frame, send each request and wait for its reply.

    Never raises: refusals, timeouts and closes are recorded. A refusal that looks like "busy" (the previous
    connection on this slot is still being released) is retried a few times.
    """
    from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
    from websockets.sync.client import connect

    from policy_server import wire

    result = Exchange()
    for attempt in range(BUSY_RETRIES):
        try:
            ws = connect(url, open_timeout=RECV_TIMEOUT_S, compression=None, max_size=2**24)
        except InvalidStatus as exc:
            result.refused = f"http {exc.response.status_code}"
            if exc.response.status_code in (409, 423, 429, 503) and attempt + 1 < BUSY_RETRIES:
                time.sleep(0.3)
                continue
            return result
        except (OSError, TimeoutError, WebSocketException) as exc:
            result.refused = type(exc).__name__
            return result
        result.refused = None
        break
    else:
        return result
    try:
        with ws:
            first = ws.recv(timeout=RECV_TIMEOUT_S)
            if isinstance(first, str):
                result.texts.append(first)
            else:
                decoded = _decode(first)
                result.metadata = decoded if isinstance(decoded, dict) else None
            for request in frames:
                started = time.perf_counter()
                ws.send(wire.packb(request))
                while True:
                    message = ws.recv(timeout=RECV_TIMEOUT_S)
                    if isinstance(message, str):
                        result.texts.append(message)
                        continue
                    result.rtt_ms.append((time.perf_counter() - started) * 1e3)
                    decoded = _decode(message)
                    result.replies.append(decoded if isinstance(decoded, dict) else {})
                    break
    except ConnectionClosed:
        pass
    except TimeoutError:
        result.close = "timeout"
    if not result.close:
        result.close = f"{ws.close_code} {ws.close_reason or ''}".strip()
    return result


def fixed_observation(requirements: dict[str, Any], *, with_state: bool = True) -> dict[str, Any]:
    """The probe's fixed observation for a slot's requirements: same robot state and replica state every time.

    Images follow the slot's requirements (so the request is valid); the state arrays and ``replica/state``
    do not depend on them, so every policy sees the same situation whatever slot it is in.
    """
    from policy_server.check import dummy_observation, dummy_replica_state

    resolution = requirements.get("image_resolution") or [224, 224]
    rig = {
        "image_resolution": resolution,
        "n_external_cameras": int(requirements.get("n_external_cameras") or 1),
        "needs_wrist_camera": bool(requirements.get("needs_wrist_camera", True)),
        "needs_stereo_camera": bool(requirements.get("needs_stereo_camera", False)),
        "needs_session_id": False,
        "needs_replica_state": False,
    }
    obs = dummy_observation(rig, seed=FIXED_SEED)
    obs["observation/joint_position"] = np.linspace(-0.5, 0.5, 7)
    obs["observation/cartesian_position"] = np.array([0.05, -0.03, 0.20, np.pi, 0.0, 0.1])
    obs["observation/gripper_position"] = np.array([0.0])
    if with_state:
        state = dummy_replica_state(np.random.default_rng(FIXED_SEED))
        obs["replica/state"] = {**state, "decoy_target_pos": np.array([-0.2, 0.15, 0.0])}
    obs["endpoint"] = "infer"
    return obs


# ------------------------------------------------------------------------------------------------ public data


class Arena:
    """The adversary's HTTP access: its lab key for the API, anonymous reads of the public pages."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url.rstrip("/")
        self.http = requests.Session()
        self.headers = {"Authorization": f"Api-Key {key}"}

    def get(self, path: str, *, auth: bool = True) -> requests.Response:
        return self.http.get(
            self.url + path, headers=self.headers if auth else None, timeout=60, allow_redirects=False
        )

    def post(self, path: str, body: dict[str, Any], *, key: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Api-Key {key}"} if key else self.headers
        return self.http.post(self.url + path, json=body, headers=headers, timeout=60)

    def session(self, session_id: str) -> dict[str, Any]:
        return self.get(f"/api/v1/sessions/{session_id}/").json()

    def relay_url(self, session_id: str, slot: str) -> str | None:
        """A fresh relay address for the slot (tokens may be short-lived and renewed through the API)."""
        return (self.session(session_id).get("slots") or {}).get(slot, {}).get("relay_url")

    def policies(self) -> list[dict[str, Any]]:
        body = self.get("/api/v1/policies/", auth=False).json()
        return body if isinstance(body, list) else body.get("results", [])

    def comparisons(self) -> list[tuple[str, str, str]]:
        """Rows (policy A slug, policy B slug, outcome) of the newest snapshot's public comparisons log."""
        board = self.get("/api/v1/leaderboard/", auth=False)
        version = board.json().get("snapshot") if board.ok else None
        if version is None:
            return []
        response = self.get(f"/leaderboard/{version}/comparisons.csv", auth=False)
        if not response.ok:
            return []
        lines = response.text.strip().splitlines()
        header = lines[0].split(",") if lines else []
        if not {"policy_a", "policy_b", "outcome"} <= set(header):
            return []
        at = [header.index(c) for c in ("policy_a", "policy_b", "outcome")]
        rows = []
        for line in lines[1:]:
            cells = line.split(",")
            rows.append((cells[at[0]], cells[at[1]], cells[at[2]]))
        return rows

    def health(self, slug: str) -> tuple[str, float | None]:
        """The public health line of a policy (page paragraph plus API detail) and its printed check latency."""
        page = self.get(f"/policies/{slug}/", auth=False)
        found = re.search(r'<p class="health"[^>]*>(.*?)</p>', page.text, re.S) if page.ok else None
        line = " ".join(html.unescape(found.group(1)).split()) if found else ""
        detail = self.get(f"/api/v1/policies/{slug}/", auth=False)
        signature = line + " | " + (json.dumps(detail.json(), sort_keys=True) if detail.ok else "")
        latency = re.search(r"([0-9][0-9.,]*)\s*ms", re.sub(r"<[^>]+>", " ", line))
        return signature, float(latency.group(1).replace(",", "")) if latency else None


def robot_meets(robot: dict[str, Any], requirements: dict[str, Any]) -> bool:
    """Whether our robot can run a policy with these public requirements (as the open-source server decides)."""
    platform = requirements.get("platform")
    if platform and platform != robot["platform"]:
        return False
    if requirements.get("needs_replica_state") and not robot["platform"].startswith("replica:"):
        return False
    if (requirements.get("n_external_cameras") or 0) > robot["n_external_cameras"]:
        return False
    if requirements.get("needs_wrist_camera") and not robot["has_wrist_camera"]:
        return False
    if requirements.get("needs_stereo_camera") and not robot["has_stereo_camera"]:
        return False
    space = requirements.get("action_space")
    return not (space and space not in robot["action_spaces"])


def pair_probabilities(slugs: list[str], rows: list[tuple[str, str, str]]) -> np.ndarray:
    """(n, n) symmetric probability of each unordered pair of ``slugs``, as the open-source sampler gives it.

    Wins are counted from the comparisons log (ties half to each side), as the server's snapshot matrices are.
    """
    from ranking import PairSampler

    index = {slug: k for k, slug in enumerate(slugs)}
    n = len(slugs)
    wins = np.zeros((n, n))
    for a, b, outcome in rows:
        if a not in index or b not in index:
            continue
        i, j = index[a], index[b]
        score = {"A": 1.0, "B": 0.0}.get(outcome, 0.5)
        wins[i, j] += score
        wins[j, i] += 1.0 - score
    sampler = PairSampler(n)
    winner, loser = np.nonzero(wins > 0)
    if len(winner):
        sampler.update_many(winner, loser, np.ones(len(winner)), weights=wins[winner, loser])
    ordered = sampler.pair_probabilities()
    return ordered + ordered.T


# ------------------------------------------------------------------------------------------------ evidence


@dataclass
class SlotEvidence:
    """Everything the adversary saw of one slot before voting."""

    token: str
    requirements: dict[str, Any]
    main: Exchange
    unknown_endpoint: Exchange
    missing_key: Exchange

    @property
    def answers(self) -> list[np.ndarray]:
        return [a for r in self.main.replies if (a := _actions(r)) is not None]

    @property
    def infer_ms(self) -> float | None:
        values = [
            float(t["infer_ms"])
            for r in self.main.replies
            if isinstance(t := r.get("server_timing"), dict) and isinstance(t.get("infer_ms"), int | float)
        ]
        return float(np.median(values)) if values else None

    @property
    def rtt_ms(self) -> float | None:
        inferred = [
            t for r, t in zip(self.main.replies, self.main.rtt_ms, strict=False) if _actions(r) is not None
        ]
        return float(np.median(inferred)) if inferred else None


@dataclass
class SessionContext:
    """Public knowledge at the time of one session."""

    eligible: list[str]
    names: dict[str, list[str]]  # slug -> distinctive public words (slug parts, name words)
    requirements: dict[str, dict[str, Any]]
    pair: np.ndarray  # (n, n) unordered pair probabilities over ``eligible``
    check_latency_ms: dict[str, float]
    replay: dict[str, list[np.ndarray]]  # slug -> answers to the fixed observation from kept tokens, now


def _plain(value: Any) -> Any:
    """JSON form of numpy values in a metadata frame."""
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else str(value)


def _normalise(text: str) -> str:
    """Error text without what varies between runs and connections: addresses, numbers, ids."""
    text = re.sub(r"0x[0-9a-fA-F]+", "0x", text)
    text = re.sub(r"[0-9a-fA-F]{8}-[0-9a-fA-F-]{27,}", "<uuid>", text)
    text = re.sub(r"\d+(\.\d+)?", "#", text)
    return " ".join(text.split())


def public_words(policies: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Per slug, the strings that name it publicly: the slug, the name, and the parts of the slug (at least 4
    letters) that no other public policy's slug shares. Name words are left out: "policy" or "baseline" occur
    in every traceback."""
    parts = {
        p["slug"]: {w for w in re.split(r"[^a-z0-9]+", p["slug"].lower()) if len(w) >= 4} for p in policies
    }
    shared = Counter(w for ws in parts.values() for w in ws)
    return {
        p["slug"]: [p["slug"].lower(), (p.get("name") or p["slug"]).lower()]
        + sorted(w for w in parts[p["slug"]] if shared[w] == 1)
        for p in policies
    }


def name_match(texts: Iterable[str], ctx: SessionContext) -> Distribution | None:
    """The one eligible policy whose public words occur in ``texts`` (most mentions wins), else None."""
    blob = " ".join(texts).lower()
    if not blob.strip():
        return None
    hits = {
        slug: sum(
            len(re.findall(rf"(?<![a-z0-9]){re.escape(w)}(?![a-z0-9])", blob))
            for w in ctx.names.get(slug, [])
        )
        for slug in ctx.eligible
    }
    best = max(hits.values(), default=0)
    leaders = [s for s, h in hits.items() if h == best]
    return {leaders[0]: 1.0} if best > 0 and len(leaders) == 1 else None


class SignatureTable:
    """Signature -> policies seen with it in revealed slots; predicts only signatures that narrow the field."""

    def __init__(self) -> None:
        self.seen: dict[str, Counter[str]] = defaultdict(Counter)

    def learn(self, signature: str | None, slug: str) -> None:
        if signature is not None:
            self.seen[signature][slug] += 1

    def predict(self, signature: str | None, ctx: SessionContext) -> Distribution | None:
        if signature is None or signature not in self.seen:
            return None
        all_seen = {s for counts in self.seen.values() for s in counts}
        counts = {s: c for s, c in self.seen[signature].items() if s in ctx.eligible}
        if not counts or set(counts) >= all_seen:
            return None
        total = sum(counts.values())
        return {s: c / total for s, c in counts.items()}


def _deterministic(answers: list[np.ndarray]) -> bool | None:
    """True if repeated answers to the same observation are equal, False if not, None with fewer than two."""
    if len(answers) < 2:
        return None
    return all(np.array_equal(answers[0], a) for a in answers[1:])


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(float) - b.astype(float)))


def _spread(answers: list[np.ndarray]) -> float | None:
    """Median distance between two answers to the same observation; None with fewer than two."""
    pairs = [_distance(a, b) for k, a in enumerate(answers) for b in answers[k + 1 :]]
    return float(np.median(pairs)) if pairs else None


def match_answers(
    current: list[np.ndarray], refs: dict[str, list[np.ndarray]], ctx: SessionContext
) -> Distribution | None:
    """Which policy gave ``current`` (the slot's answers to the fixed observation), against reference answers.

    A deterministic slot is the policy with an identical reference answer; failing that, one of the policies
    not ruled out (ruled out: known deterministic with another answer, or known random). A random slot is the
    nearest random reference (softly, by distance) or a policy not seen yet. None without answers or references.
    """
    if not current:
        return None
    shaped = {s: [r for r in refs.get(s, []) if r.shape == current[0].shape] for s in ctx.eligible}
    if not any(shaped.values()):
        return None
    kind = {s: _deterministic(rs) for s, rs in shaped.items()}
    unseen = [s for s in ctx.eligible if not refs.get(s)]
    if _deterministic(current) is not False:
        exact = [s for s, rs in shaped.items() if any(np.array_equal(current[0], r) for r in rs)]
        if exact:
            return {s: 1.0 / len(exact) for s in exact}
        if _deterministic(current):
            open_ = unseen + [s for s, k in kind.items() if k is None and s not in unseen]
            return {s: 1.0 / len(open_) for s in open_} if open_ else None
    candidates = {s: rs for s, rs in shaped.items() if rs and kind[s] is not True}
    if not candidates:
        return {s: 1.0 / len(unseen) for s in unseen} if unseen else None
    # A random policy is recognised by how far its answers scatter: the slot's two answers should lie as far
    # apart as the policy's own reference answers do, and as far from those references.
    own_spread = _spread(current)
    score = {}
    for s, rs in candidates.items():
        spread = _spread(rs)
        nearest = min(_distance(a, r) for a in current for r in rs)
        if spread is None or own_spread is None:
            score[s] = nearest
        else:
            score[s] = abs(math.log(max(own_spread, 1e-9) / max(spread, 1e-9))) + abs(
                math.log(max(nearest, 1e-9) / max(spread, 1e-9))
            )
    best = min(score.values())
    weights = {s: math.exp(-(v - best) / MATCH_TEMPERATURE) for s, v in score.items()}
    floor = min(weights.values())
    weights.update({s: floor for s in unseen})
    total = sum(weights.values())
    return {s: w / total for s, w in weights.items()}


# ------------------------------------------------------------------------------------------------ channels


class Adversary:
    """The learning state of the curious lab: what revealed sessions taught each channel."""

    def __init__(self) -> None:
        self.errors = SignatureTable()
        self.reply = SignatureTable()
        self.lengths = SignatureTable()
        self.requirement_values = SignatureTable()
        self.answers: dict[str, list[np.ndarray]] = defaultdict(list)
        self.timing: dict[str, list[tuple[float | None, float | None]]] = defaultdict(list)
        self.kept_urls: dict[str, str] = {}  # slug -> newest relay address of a revealed slot
        self.record: dict[str, list[bool]] = defaultdict(list)  # channel -> correctness on revealed slots

    # Each predictor maps (evidence, context) to a distribution over eligible slugs, or None (abstains).

    @staticmethod
    def _error_texts(slot: SlotEvidence) -> list[str]:
        texts = []
        for exchange in (slot.unknown_endpoint, slot.missing_key):
            texts += exchange.texts + [exchange.close]
            if exchange.refused:
                texts.append(f"refused {exchange.refused}")
        return texts

    def _error_signature(self, slot: SlotEvidence) -> str:
        parts = []
        for exchange in (slot.unknown_endpoint, slot.missing_key):
            answered = "answered" if exchange.answered else "no answer"
            parts.append(
                f"{exchange.refused} {answered} {_normalise(' '.join(exchange.texts))} {_normalise(exchange.close)}"
            )
        return " || ".join(parts)

    def predict_errors(self, slot: SlotEvidence, ctx: SessionContext) -> Distribution | None:
        return name_match(self._error_texts(slot), ctx) or self.errors.predict(
            self._error_signature(slot), ctx
        )

    @staticmethod
    def _reply_extras(slot: SlotEvidence, ctx: SessionContext) -> tuple[list[str], list[str]]:
        """(extra key names, extra texts and values) of the metadata frame, the replies and the text frames."""
        standard = REQUIREMENT_KEYS | set(slot.requirements) | PROTOCOL_MARKERS
        keys, texts = [], list(slot.main.texts)
        for key, value in (slot.main.metadata or {}).items():
            if key not in standard:
                keys.append(f"meta:{key}")
                texts.append(f"{key} {value}")
        for reply in slot.main.replies:
            if _actions(reply) is None:
                continue  # the reset's acknowledgement
            for key, value in reply.items():
                if key not in EXPECTED_REPLY_KEYS:
                    keys.append(f"reply:{key}")
                    texts.append(f"{key} {value}")
            timing = reply.get("server_timing")
            if isinstance(timing, dict):
                keys += [f"timing:{k}" for k in timing if k not in EXPECTED_TIMING_KEYS]
        return sorted(set(keys)), texts

    def _reply_signature(self, slot: SlotEvidence, ctx: SessionContext) -> str | None:
        keys, _ = self._reply_extras(slot, ctx)
        texts = sorted({_normalise(t) for t in slot.main.texts})
        return None if not keys and not texts else " ".join(keys) + " | " + " | ".join(texts)

    def predict_reply(self, slot: SlotEvidence, ctx: SessionContext) -> Distribution | None:
        keys, texts = self._reply_extras(slot, ctx)
        if not keys and not texts:
            return None
        return name_match(texts + keys, ctx) or self.reply.predict(self._reply_signature(slot, ctx), ctx)

    def predict_fingerprint(self, slot: SlotEvidence, ctx: SessionContext) -> Distribution | None:
        return match_answers(slot.answers, self.answers, ctx)

    @staticmethod
    def predict_replay(slot: SlotEvidence, ctx: SessionContext) -> Distribution | None:
        return match_answers(slot.answers, ctx.replay, ctx)

    @staticmethod
    def _requirement_signature(slot: SlotEvidence) -> str:
        """The slot's requirement values: the session view's and those in the relay's metadata frame."""
        framed = {k: v for k, v in (slot.main.metadata or {}).items() if k in REQUIREMENT_KEYS}
        return json.dumps([slot.requirements, framed], sort_keys=True, default=_plain)

    def predict_requirements(self, slot: SlotEvidence, ctx: SessionContext) -> Distribution | None:
        return self.requirement_values.predict(self._requirement_signature(slot), ctx)

    def predict_length(self, slot: SlotEvidence, ctx: SessionContext) -> Distribution | None:
        return self.lengths.predict(str(len(slot.token)), ctx)

    def predict_timing(self, slot: SlotEvidence, ctx: SessionContext) -> Distribution | None:
        """Gaussian per policy on log10 infer_ms and log10 round trip; public check latencies stand in for
        round trips of policies not yet revealed."""
        features = (slot.infer_ms, slot.rtt_ms)
        if all(f is None for f in features):
            return None
        refs: dict[str, list[tuple[float | None, float | None]]] = {
            s: list(self.timing.get(s, [])) for s in ctx.eligible
        }
        for s, latency in ctx.check_latency_ms.items():
            if s in refs and not refs[s]:
                refs[s].append((None, latency))
        log_likelihood: dict[str, float] = {}
        for dim, value in enumerate(features):
            if value is None:
                continue
            x = math.log10(max(value, 1e-3))
            samples = {
                s: [math.log10(max(r[dim], 1e-3)) for r in rs if r[dim] is not None] for s, rs in refs.items()
            }
            samples = {s: v for s, v in samples.items() if v}
            if len(samples) < 2:
                continue
            spread = [v - float(np.mean(vs)) for vs in samples.values() for v in vs]
            sigma = max(float(np.std(spread)) if len(spread) > 2 else 0.1, 0.05)
            for s, vs in samples.items():
                log_likelihood[s] = log_likelihood.get(s, 0.0) - 0.5 * ((x - float(np.mean(vs))) / sigma) ** 2
        if len(log_likelihood) < 2:
            return None
        top = max(log_likelihood.values())
        weights = {s: math.exp(v - top) for s, v in log_likelihood.items()}
        total = sum(weights.values())
        return {s: w / total for s, w in weights.items()}

    def learn(self, slot: SlotEvidence, slug: str, ctx: SessionContext) -> None:
        """A revealed slot: remember what each channel saw of ``slug``."""
        self.errors.learn(self._error_signature(slot), slug)
        self.reply.learn(self._reply_signature(slot, ctx), slug)
        self.lengths.learn(str(len(slot.token)), slug)
        self.requirement_values.learn(self._requirement_signature(slot), slug)
        self.answers[slug] += slot.answers
        self.timing[slug].append((slot.infer_ms, slot.rtt_ms))

    def reliability(self, channel: str, chance: float) -> float:
        """How far above chance a channel's guesses were on revealed slots, in [0, 1]."""
        outcomes = self.record.get(channel, [])
        accuracy = (sum(outcomes) + 2 * chance) / (len(outcomes) + 2)  # a prior at chance: earn trust
        return max(0.0, (accuracy - chance) / (1.0 - chance))


def pair_posterior(ctx: SessionContext, slot_reqs: dict[str, dict[str, Any]] | None) -> np.ndarray:
    """(n, n) probability that policy i is in slot A and j in slot B; ``slot_reqs`` filters by requirements."""
    joint = ctx.pair / 2.0
    if slot_reqs is not None:
        fits = {
            slot: np.array([_same_requirements(ctx.requirements[s], slot_reqs[slot]) for s in ctx.eligible])
            for slot in SLOTS
        }
        if fits["A"].any() and fits["B"].any():
            joint = joint * np.outer(fits["A"], fits["B"])
    total = joint.sum()
    return joint / total if total > 0 else joint


def _same_requirements(public: dict[str, Any], slot: dict[str, Any]) -> bool:
    shared = set(public) & set(slot)
    return bool(shared) and all(public[k] == slot[k] for k in shared)


def marginal(joint: np.ndarray, ctx: SessionContext, slot: str) -> Distribution | None:
    p = joint.sum(axis=1 if slot == "A" else 0)
    n = len(ctx.eligible)
    if p.sum() <= 0 or np.allclose(p, 1.0 / n, atol=1e-9):
        return None
    return {s: float(v) for s, v in zip(ctx.eligible, p, strict=True) if v > 0}


def guess(distribution: Distribution | None, rng: random.Random) -> str | None:
    """The most probable slug (ties broken at random), or None for an abstention."""
    if not distribution:
        return None
    top = max(distribution.values())
    return rng.choice(sorted(s for s, p in distribution.items() if p >= top - 1e-12))


# ------------------------------------------------------------------------------------------------ the probe


@dataclass
class ChannelScore:
    channel: str
    slots: int = 0
    predicted: int = 0
    correct: int = 0
    chance: float = 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.predicted if self.predicted else None

    def interval(self) -> tuple[float, float] | None:
        """Clopper-Pearson 95% interval of the accuracy on predicted slots."""
        if not self.predicted:
            return None
        from scipy.stats import binomtest

        ci = binomtest(self.correct, self.predicted).proportion_ci(0.95, method="exact")
        return float(ci.low), float(ci.high)


@dataclass
class TokenLifetime:
    """Counts of relay tokens that still ran inference when they should not have."""

    after_end_tried: int = 0
    after_end_alive: int = 0
    replay_tried: int = 0
    replay_alive: int = 0
    concurrent_opened: int = 0
    concurrent_accepted: int = 0
    revoked_key_tried: int = 0
    revoked_key_alive: int = 0


@dataclass
class ProbeResult:
    sessions: list[dict[str, Any]] = field(default_factory=list)
    scores: dict[str, ChannelScore] = field(default_factory=dict)
    tokens: TokenLifetime = field(default_factory=TokenLifetime)
    pair_checked: int = 0
    pair_reproduced: int = 0
    max_pair_probability: float = 0.0
    max_stored_pair_probability: float = 0.0
    n_eligible: int = 0
    seconds: float = 0.0


class BlindProbe:
    """Runs sessions as the curious lab and scores the guesses. ``truth`` scores aborted sessions only."""

    def __init__(
        self,
        arena: Arena,
        *,
        robot: dict[str, Any],
        lab_organization: str,
        truth: Callable[[str], dict[str, str]],
        stored_pair_probability: Callable[[str], float | None],
        seed: int,
        oracle_wait_s: float,
    ) -> None:
        self.arena = arena
        self.robot = robot
        self.lab_organization = lab_organization
        self.truth = truth
        self.stored_pair_probability = stored_pair_probability
        self.rng = random.Random(seed)
        self.oracle_wait_s = oracle_wait_s
        self.adversary = Adversary()
        self.result = ProbeResult(scores={c: ChannelScore(c) for c in CHANNELS})

    # -- public knowledge --------------------------------------------------------------------------------

    def context(self) -> SessionContext:
        policies = [p for p in self.arena.policies() if p.get("status") == "active"]
        eligible = [
            p
            for p in sorted(policies, key=lambda p: (p.get("created_at") or "", p["slug"]))
            if p.get("organization") != self.lab_organization
            and robot_meets(self.robot, p.get("requirements") or {})
        ]
        slugs = [p["slug"] for p in eligible]
        latencies = {}
        for slug in slugs:
            _, latency = self.arena.health(slug)
            if latency is not None:
                latencies[slug] = latency
        replay: dict[str, list[np.ndarray]] = {}
        for slug, url in self.adversary.kept_urls.items():
            obs = fixed_observation(self._public_reqs(eligible, slug))
            exchange = talk(url, [RESET, obs, obs])
            self.result.tokens.replay_tried += 1
            if exchange.answered:
                self.result.tokens.replay_alive += 1
                replay[slug] = [a for r in exchange.replies if (a := _actions(r)) is not None]
        return SessionContext(
            eligible=slugs,
            names=public_words(self.arena.policies()),
            requirements={p["slug"]: p.get("requirements") or {} for p in eligible},
            pair=pair_probabilities(slugs, self.arena.comparisons()) if len(slugs) >= 2 else np.zeros((0, 0)),
            check_latency_ms=latencies,
            replay=replay,
        )

    @staticmethod
    def _public_reqs(eligible: list[dict[str, Any]], slug: str) -> dict[str, Any]:
        return next((p.get("requirements") or {} for p in eligible if p["slug"] == slug), {})

    # -- one session -------------------------------------------------------------------------------------

    def observe_slot(self, session_id: str, slot: str, view: dict[str, Any]) -> SlotEvidence:
        requirements = view["slots"][slot].get("requirements") or {}
        first_url = view["slots"][slot].get("relay_url") or ""
        obs = fixed_observation(requirements)
        main = talk(first_url, [RESET, obs, obs])
        unknown = talk(self.arena.relay_url(session_id, slot) or first_url, [{"endpoint": UNKNOWN_ENDPOINT}])
        missing = talk(
            self.arena.relay_url(session_id, slot) or first_url,
            [fixed_observation(requirements, with_state=False)],
        )
        return SlotEvidence(
            token=first_url.rstrip("/").rsplit("/", 1)[-1],
            requirements=requirements,
            main=main,
            unknown_endpoint=unknown,
            missing_key=missing,
        )

    def concurrency(self, session_id: str, slot: str, count: int = 3) -> None:
        """Open ``count`` connections on one slot's token at once; count those that got the metadata frame."""
        from websockets.exceptions import ConnectionClosed, WebSocketException
        from websockets.sync.client import connect

        url = self.arena.relay_url(session_id, slot)
        if not url:
            return
        opened = []
        for _ in range(count):
            self.result.tokens.concurrent_opened += 1
            try:
                ws = connect(url, open_timeout=RECV_TIMEOUT_S, compression=None, max_size=2**24)
            except (OSError, TimeoutError, WebSocketException):
                continue
            opened.append(ws)
        for ws in opened:
            try:
                ws.recv(timeout=RECV_TIMEOUT_S)
                self.result.tokens.concurrent_accepted += 1
            except (ConnectionClosed, TimeoutError):
                pass
        for ws in opened:
            ws.close()
        time.sleep(0.3)  # let the relay release the slot before the probe's own connections

    def run_session(self, n: int, *, abort: bool) -> None:
        ctx = self.context()
        n_eligible = len(ctx.eligible)
        self.result.n_eligible = n_eligible
        chance = 1.0 / n_eligible if n_eligible else 0.0
        before = {s: self.arena.health(s)[0] for s in ctx.eligible} if abort else {}
        created = self.arena.post(
            "/api/v1/sessions/",
            {"robot": self.robot["name"], "task": "put the block in the bowl", "task_category": "pick_place"},
        )
        if created.status_code != 201:
            raise RuntimeError(f"session request refused: {created.status_code} {created.text[:300]}")
        view = created.json()
        sid = view["id"]
        if n == 0:
            self.concurrency(sid, "A")
        evidence = {slot: self.observe_slot(sid, slot, view) for slot in SLOTS}
        slot_reqs = {slot: evidence[slot].requirements for slot in SLOTS}
        predictions: dict[str, dict[str, Distribution | None]] = {slot: {} for slot in SLOTS}
        pair_only, pair_reqs = pair_posterior(ctx, None), pair_posterior(ctx, slot_reqs)
        for slot in SLOTS:
            found = evidence[slot]
            predictions[slot] = {
                "errors": self.adversary.predict_errors(found, ctx),
                "reply": self.adversary.predict_reply(found, ctx),
                "fingerprint": self.adversary.predict_fingerprint(found, ctx),
                "token-replay": self.adversary.predict_replay(found, ctx),
                "pair": marginal(pair_only, ctx, slot),
                "pair+reqs": marginal(pair_reqs, ctx, slot),
                "requirements": self.adversary.predict_requirements(found, ctx),
                "abort-oracle": None,
                "token-length": self.adversary.predict_length(found, ctx),
                "timing": self.adversary.predict_timing(found, ctx),
            }
        last_urls = {
            slot: self.arena.relay_url(sid, slot) or view["slots"][slot].get("relay_url") for slot in SLOTS
        }
        revealed = False
        if abort:
            self.arena.post(
                f"/api/v1/sessions/{sid}/abort/", {"reason": "the arm stopped", "fault": "policy_a"}
            )
            predictions["A"]["abort-oracle"] = self.abort_oracle(before, ctx)
            truth = self.truth(sid)
        else:
            for slot in SLOTS:
                self.arena.post(
                    f"/api/v1/sessions/{sid}/episodes/",
                    {"slot": slot, "progress": 40, "success": False, "steps": 400, "duration_s": 27.0},
                )
            done = self.arena.post(
                f"/api/v1/sessions/{sid}/preference/",
                {"choice": self.rng.choice(SLOTS), "reason": "steadier"},
            ).json()
            reveal = done.get("reveal") or {}
            revealed = all(isinstance(reveal.get(slot), dict) and "slug" in reveal[slot] for slot in SLOTS)
            truth = {slot: reveal[slot]["slug"] for slot in SLOTS} if revealed else self.truth(sid)
        combined = self.combined(ctx, pair_reqs, predictions, chance)
        for slot in SLOTS:
            predictions[slot]["combined"] = combined[slot]
        for url in last_urls.values():
            if url:
                self.result.tokens.after_end_tried += 1
                self.result.tokens.after_end_alive += talk(url, [fixed_observation(slot_reqs["A"])]).answered
        stored = self.stored_pair_probability(sid)
        if stored is not None:
            self.result.max_stored_pair_probability = max(self.result.max_stored_pair_probability, stored)
        if stored is not None and ctx.eligible and all(truth[s] in ctx.eligible for s in SLOTS):
            i, j = ctx.eligible.index(truth["A"]), ctx.eligible.index(truth["B"])
            self.result.pair_checked += 1
            self.result.pair_reproduced += abs(float(ctx.pair[i, j]) - stored) < 1e-6
        if ctx.pair.size:
            self.result.max_pair_probability = max(self.result.max_pair_probability, float(ctx.pair.max()))
        self.score(n, sid, abort, truth, predictions, chance, revealed=revealed)
        if revealed:
            for slot in SLOTS:
                self.adversary.learn(evidence[slot], truth[slot], ctx)
                if last_urls[slot]:
                    self.adversary.kept_urls[truth[slot]] = last_urls[slot]

    def abort_oracle(self, before: dict[str, str], ctx: SessionContext) -> Distribution | None:
        """Poll the public policy pages until a health line changes or ``oracle_wait_s`` passes."""
        deadline = time.monotonic() + self.oracle_wait_s
        changed: set[str] = set()
        while time.monotonic() < deadline and not changed:
            changed = {s for s in ctx.eligible if self.arena.health(s)[0] != before.get(s)}
            if not changed:
                time.sleep(0.2)
        return {s: 1.0 / len(changed) for s in changed} if changed else None

    def combined(
        self,
        ctx: SessionContext,
        prior: np.ndarray,
        predictions: dict[str, dict[str, Distribution | None]],
        chance: float,
    ) -> dict[str, Distribution | None]:
        """Posterior over ordered pairs: the requirement-filtered pair prior times each channel's distribution,
        each shrunk towards uniform by that channel's reliability so far."""
        n = len(ctx.eligible)
        if n < 2:
            return {slot: None for slot in SLOTS}
        uniform_pairs = (1.0 - np.eye(n)) / (n * (n - 1))
        w = self.adversary.reliability("pair+reqs", chance)
        joint = w * prior + (1.0 - w) * uniform_pairs if prior.sum() > 0 else uniform_pairs
        for channel in CHANNELS:
            if channel in ("pair", "pair+reqs", "combined"):
                continue
            weight = self.adversary.reliability(channel, chance)
            for axis, slot in enumerate(SLOTS):
                found = predictions[slot].get(channel)
                if not found or weight <= 0:
                    continue
                q = np.array([found.get(s, 0.0) for s in ctx.eligible])
                q = weight * q / q.sum() + (1.0 - weight) / n
                joint = joint * (q[:, None] if axis == 0 else q[None, :])
        joint = joint / joint.sum()
        return {slot: marginal(joint, ctx, slot) for slot in SLOTS}

    def score(
        self,
        n: int,
        sid: str,
        abort: bool,
        truth: dict[str, str],
        predictions: dict[str, dict[str, Distribution | None]],
        chance: float,
        *,
        revealed: bool,
    ) -> None:
        entry: dict[str, Any] = {"n": n, "session": sid, "aborted": abort, "truth": truth, "guesses": {}}
        for slot in SLOTS:
            entry["guesses"][slot] = {}
            for channel in CHANNELS:
                named = guess(predictions[slot].get(channel), self.rng)
                score = self.result.scores[channel]
                score.chance = chance
                if channel != "abort-oracle" or (abort and slot == "A"):
                    score.slots += 1
                entry["guesses"][slot][channel] = named
                if named is None:
                    continue
                score.predicted += 1
                score.correct += named == truth[slot]
                if revealed:
                    self.adversary.record[channel].append(named == truth[slot])
        self.result.sessions.append(entry)

    def revoked_key(self) -> None:
        """A token minted for a key that is revoked afterwards: does it still run inference?"""
        made = self.arena.post("/api/v1/keys/", {"name": "probe-revoked"})
        if made.status_code != 201:
            return
        body = made.json()
        created = self.arena.post(
            "/api/v1/sessions/",
            {"robot": self.robot["name"], "task": "put the block in the bowl"},
            key=body["key"],
        )
        if created.status_code != 201:
            return
        view = created.json()
        url = view["slots"]["A"].get("relay_url") or ""
        self.arena.post(f"/api/v1/keys/{body['prefix']}/revoke/", {})
        time.sleep(0.5)
        self.result.tokens.revoked_key_tried += 1
        self.result.tokens.revoked_key_alive += talk(
            url, [fixed_observation(view["slots"]["A"].get("requirements") or {})]
        ).answered
        self.arena.post(f"/api/v1/sessions/{view['id']}/abort/", {"reason": "probe done", "fault": "robot"})


# ------------------------------------------------------------------------------------------------ output


def by_policy(result: ProbeResult) -> dict[str, dict[str, Any]]:
    """Per true policy: its number of slots and, per channel, [correct, predicted] on its slots."""
    rows: dict[str, dict[str, Any]] = {}
    for entry in result.sessions:
        for slot in SLOTS:
            slug = entry["truth"][slot]
            row = rows.setdefault(slug, {"slots": 0, **{c: [0, 0] for c in CHANNELS}})
            row["slots"] += 1
            for channel, named in entry["guesses"][slot].items():
                if named is not None:
                    row[channel][1] += 1
                    row[channel][0] += named == slug
    return rows


def table(result: ProbeResult) -> str:
    lines = [
        f"Blind probe: {len(result.sessions)} sessions, {result.n_eligible} eligible policies "
        f"(chance {1 / max(result.n_eligible, 1):.3f} per slot), {result.seconds:.0f} s",
        "",
        f"{'channel':<14} {'predicted':>11} {'correct':>8} {'accuracy':>9} {'95% CI':>15} {'chance':>7}",
    ]
    for channel in CHANNELS:
        s = result.scores[channel]
        ci = s.interval()
        accuracy = "-" if s.accuracy is None else f"{s.accuracy:.2f}"
        interval = "-" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"
        lines.append(
            f"{channel:<14} {f'{s.predicted}/{s.slots}':>11} {s.correct:>8} {accuracy:>9} {interval:>15} {s.chance:>7.3f}"
        )
    lines += ["", "Correct / predicted per policy in the slot (its number of slots in brackets):"]
    lines.append(f"{'policy':<22} " + " ".join(f"{SHORT_NAMES.get(c, c):>9}" for c in CHANNELS))
    for slug, row in sorted(by_policy(result).items()):
        cells = " ".join(f"{f'{row[c][0]}/{row[c][1]}':>9}" for c in CHANNELS)
        lines.append(f"{slug + ' (' + str(row['slots']) + ')':<22} {cells}")
    t = result.tokens
    lines += [
        "",
        "Token lifetime (a closed session's token should not run inference):",
        f"  answered after the vote or abort: {t.after_end_alive}/{t.after_end_tried}",
        f"  answered when replayed in later sessions: {t.replay_alive}/{t.replay_tried}",
        f"  concurrent connections on one token accepted: {t.concurrent_accepted}/{t.concurrent_opened}",
        f"  token of a revoked key answered: {t.revoked_key_alive}/{t.revoked_key_tried}",
        f"Pair from public data: reproduced the stored pair probability in {result.pair_reproduced}/"
        f"{result.pair_checked} sessions; largest unordered pair probability the server stored "
        f"{result.max_stored_pair_probability:.3f}, the public sampler's largest "
        f"{result.max_pair_probability:.3f} (uniform {2 / max(result.n_eligible * (result.n_eligible - 1), 1):.3f})",
    ]
    return "\n".join(lines)


def as_json(result: ProbeResult) -> dict[str, Any]:
    channels = []
    for channel in CHANNELS:
        s = result.scores[channel]
        ci = s.interval()
        channels.append(
            {
                **asdict(s),
                "accuracy": s.accuracy,
                "ci_low": None if ci is None else ci[0],
                "ci_high": None if ci is None else ci[1],
            }
        )
    return {
        "n_sessions": len(result.sessions),
        "n_eligible": result.n_eligible,
        "seconds": result.seconds,
        "channels": channels,
        "tokens": asdict(result.tokens),
        "pair": {
            "checked": result.pair_checked,
            "reproduced": result.pair_reproduced,
            "max_probability": result.max_pair_probability,
            "max_stored_probability": result.max_stored_pair_probability,
        },
        "by_policy": by_policy(result),
        "sessions": result.sessions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.blind_probe", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="12 sessions, 12 warm-up votes, 2 s oracle wait")
    parser.add_argument("--sessions", type=int, help="sessions the curious lab runs (default 24)")
    parser.add_argument("--warmup", type=int, help="honest preferences before the probe (default 24)")
    parser.add_argument(
        "--oracle-wait", type=float, help="seconds to watch public pages after an abort (default 4)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", help="also write the results (with every guess) to this file")
    args = parser.parse_args(argv)
    sessions = args.sessions or (12 if args.quick else 24)
    warmup = args.warmup if args.warmup is not None else (12 if args.quick else 24)
    oracle_wait = args.oracle_wait if args.oracle_wait is not None else (2.0 if args.quick else 4.0)

    from benchmarks.blind_probe_network import ROBOT, probe_network

    started = time.perf_counter()
    print(f"standing the network up ({warmup} warm-up votes) ...", file=sys.stderr, flush=True)
    with probe_network(seed=args.seed, warmup=warmup) as network:
        probe = BlindProbe(
            Arena(network.url, network.lab_key),
            robot=ROBOT,
            lab_organization=network.lab_organization,
            truth=network.truth,
            stored_pair_probability=network.stored_pair_probability,
            seed=args.seed,
            oracle_wait_s=oracle_wait,
        )
        for n in range(sessions):
            probe.run_session(n, abort=n % 4 == 3)
            print(
                f"  session {n + 1}/{sessions} done ({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        probe.revoked_key()
        probe.result.seconds = time.perf_counter() - started
        print(f"endpoint allow-list: {network.endpoint_allow}", file=sys.stderr)
    print(table(probe.result))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(as_json(probe.result), out, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
