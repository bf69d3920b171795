"""The blind probe's predictors (``benchmarks.blind_probe``): an open channel names the policy, a closed one
abstains instead of guessing, so that the before/after figures of issue 13 compare like with like.

The probe itself is a benchmark (it stands a whole network up); these checks cover its decision rules only,
on hand-made evidence, in well under a second.
"""

from __future__ import annotations

import numpy as np

from benchmarks.blind_probe import SessionContext, SignatureTable, match_answers, name_match, public_words

POLICIES = [
    {"slug": "baseline-expert", "name": "Baseline: expert"},
    {"slug": "baseline-noisy", "name": "Baseline: noisy"},
    {"slug": "nimbus-random", "name": "Nimbus Random"},
    {"slug": "orion-diffusion", "name": "Orion Diffusion Policy"},
]


def context() -> SessionContext:
    slugs = [p["slug"] for p in POLICIES]
    return SessionContext(
        eligible=slugs,
        names=public_words(POLICIES),
        requirements={s: {} for s in slugs},
        pair=np.full((4, 4), 1 / 6) - np.eye(4) / 6,
        check_latency_ms={},
        replay={},
    )


def test_error_text_naming_a_policy_names_it_and_a_generic_error_abstains():
    ctx = context()
    traceback = (
        'File "/srv/policy_server/baselines.py", line 120, in infer\n'
        "MissingReplicaStateError: \"baseline 'noisy' needs the replica's privileged state\""
    )
    assert name_match([traceback], ctx) == {"baseline-noisy": 1.0}
    # Words every policy shares ("baseline", "policy") name nobody.
    assert name_match(["policy server error in baseline code"], ctx) is None
    assert name_match(["1011 policy_error: the policy failed"], ctx) is None


def test_a_signature_every_policy_shares_is_no_evidence():
    ctx = context()
    distinctive, generic = SignatureTable(), SignatureTable()
    for slug in ctx.eligible:
        distinctive.learn(f"trace of {slug}", slug)
        generic.learn("1011 policy_error", slug)
    assert distinctive.predict("trace of orion-diffusion", ctx) == {"orion-diffusion": 1.0}
    assert generic.predict("1011 policy_error", ctx) is None
    assert distinctive.predict("never seen", ctx) is None


def test_answers_to_the_fixed_observation_fingerprint_deterministic_and_random_policies():
    ctx = context()
    rng = np.random.default_rng(0)
    expert = np.linspace(-0.5, 0.5, 70).reshape(10, 7)
    refs = {
        "baseline-expert": [expert, expert],
        "baseline-noisy": [expert + rng.normal(0, 0.12, (10, 7)) for _ in range(4)],
        "nimbus-random": [rng.uniform(-1, 1, (10, 7)) for _ in range(4)],
    }
    assert match_answers([expert, expert], refs, ctx) == {"baseline-expert": 1.0}
    unseen = match_answers([expert + 1.0, expert + 1.0], refs, ctx)
    assert unseen == {"orion-diffusion": 1.0}  # deterministic, matches no one seen: the policy not yet seen
    random_slot = match_answers([rng.uniform(-1, 1, (10, 7)) for _ in range(2)], refs, ctx)
    assert max(random_slot, key=random_slot.get) == "nimbus-random"
    noisy_slot = match_answers([expert + rng.normal(0, 0.12, (10, 7)) for _ in range(2)], refs, ctx)
    assert max(noisy_slot, key=noisy_slot.get) == "baseline-noisy"
    assert match_answers([], refs, ctx) is None
    assert match_answers([expert], {}, ctx) is None
