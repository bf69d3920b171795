"""Behavioural fingerprints: a policy whose answer to the check's probe changes without a new version is
flagged for its owner and staff, and the fingerprint never reaches the public or a lab."""

import numpy as np

from arena.models import Policy
from arena.tasks import policy_check_one
from policy_server.base import BasePolicy
from policy_server.check import behaviour_fingerprint, behaviour_probe, same_behaviour
from policy_server.server import serve_in_thread
from tests.api.actors import DROID_CONFIG, register_policy


class TunablePolicy(BasePolicy):
    """Answers a constant chunk of ``level`` (plus noise of ``noise`` if given): a stand-in for a checkpoint."""

    def __init__(self, level: float, noise: float = 0.0) -> None:
        self.level, self.noise = level, noise
        self.rng = np.random.default_rng(7)

    def infer(self, obs):
        actions = np.full((10, 8), self.level) + self.noise * self.rng.standard_normal((10, 8))
        return {"actions": actions.astype(np.float32)}

    @property
    def metadata(self):
        return dict(DROID_CONFIG)


def check(slug: str) -> Policy:
    assert policy_check_one(Policy.objects.get(slug=slug).pk) is True
    return Policy.objects.get(slug=slug)


def test_fingerprint_tolerates_float_noise_and_tells_checkpoints_apart():
    actions = np.linspace(-1, 1, 80).reshape(10, 8) + 0.003
    assert behaviour_fingerprint(actions) == behaviour_fingerprint(actions + 1e-5)
    assert behaviour_fingerprint(actions) != behaviour_fingerprint(actions + 0.05)
    assert behaviour_fingerprint(np.zeros((10, 8))) == behaviour_fingerprint(-np.zeros((10, 8)))
    assert behaviour_fingerprint(np.zeros((10, 8))) != behaviour_fingerprint(np.zeros((8, 10)))
    # A value next to a rounding boundary lands on either side: the hash differs, the answers still match.
    edge = np.full((10, 8), 0.005)
    below, above = behaviour_probe(edge - 1e-6), behaviour_probe(edge + 1e-6)
    assert behaviour_fingerprint(edge - 1e-6) != behaviour_fingerprint(edge + 1e-6)
    assert same_behaviour(below, above)
    assert not same_behaviour(below, behaviour_probe(edge + 0.03))
    assert not same_behaviour(behaviour_probe(np.zeros((10, 8))), behaviour_probe(np.zeros((8, 10))))


def test_changed_behaviour_without_a_new_version_is_flagged(owner, anonymous):
    policy = TunablePolicy(0.25)
    with serve_in_thread(policy) as server:
        register_policy(owner, "swapped", endpoint_url=server.url, version_label="ckpt-1")
        first = check("swapped")
        assert first.status == "active" and len(first.fingerprint) == 64
        for noise in (1e-5, -1e-5, 0.0051, 0.0049):  # noise, and values across a rounding boundary
            policy.level = 0.25 + noise
            assert check("swapped").behaviour_changed_at is None
        policy.level = 0.6  # another checkpoint behind the same endpoint and label
        assert check("swapped").behaviour_changed_at is None  # one differing answer may be noise
        flagged = check("swapped")
        assert flagged.behaviour_changed_at is not None and flagged.fingerprint == first.fingerprint

        mine = owner.get("/api/v1/policies/swapped/").json()
        assert mine["behaviour_changed_at"]
        checks = owner.get("/api/v1/policies/swapped/checks/").json()
        assert [c["fingerprint_matches"] for c in checks] == [False, False, True, True, True, True, True]
        public = anonymous.get("/api/v1/policies/swapped/")
        page = anonymous.client.get("/policies/swapped/").content.decode()
        for text in (public.content.decode(), page):
            assert first.fingerprint not in text and "behaviour_changed" not in text
        assert first.fingerprint not in str(checks)

        # Declaring the new checkpoint starts a version with a fingerprint of its own.
        assert owner.patch("/api/v1/policies/swapped/", {"version_label": "ckpt-2"}).status_code == 200
        v2 = check("swapped-v2")
        assert v2.behaviour_changed_at is None and v2.fingerprint == flagged.checks.first().fingerprint
        assert check("swapped-v2").behaviour_changed_at is None


def test_a_sampling_policy_is_never_flagged(owner):
    checks = 4
    with serve_in_thread(TunablePolicy(0.1, noise=0.2)) as server:
        register_policy(owner, "sampler", endpoint_url=server.url, version_label="diffusion")
        for _ in range(checks):
            assert check("sampler").behaviour_changed_at is None
    assert len(set(Policy.objects.get(slug="sampler").checks.values_list("fingerprint", flat=True))) == checks


def test_a_lab_never_sees_a_fingerprint(owner, lab1):
    from tests.api.actors import register_robot, request_session

    with serve_in_thread(TunablePolicy(0.2)) as one, serve_in_thread(TunablePolicy(0.7)) as two:
        for slug, server in (("fp-one", one), ("fp-two", two)):
            register_policy(owner, slug, endpoint_url=server.url)
            check(slug)
    fingerprints = set(Policy.objects.values_list("fingerprint", flat=True))
    assert len(fingerprints) == 2
    register_robot(lab1)
    session = request_session(lab1).json()
    seen = [
        lab1.get(f"/api/v1/sessions/{session['id']}/").content.decode(),
        lab1.get("/api/v1/sessions/").content.decode(),
        lab1.get("/api/v1/policies/").content.decode(),
        lab1.get("/api/v1/policies/fp-one/").content.decode(),
    ]
    for text in seen:
        assert not any(fp in text for fp in fingerprints) and "fingerprint" not in text
