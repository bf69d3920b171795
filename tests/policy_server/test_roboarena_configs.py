"""Every RoboArena ``PolicyServerConfig`` field, honoured by our client and health check, directly and through
the relay: native frames (``image_resolution: None``), ``needs_session_id``, stereo, and the action space
against the chunk shape the policy answers."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from arena_test_policies import EchoPolicy, FixedActionsPolicy
from roboarena_dialect import (
    CLOSE_REASON,
    CONFIG_MATRIX,
    ConfigPolicy,
    PolicyServerConfig,
    serve_roboarena_in_thread,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from policy_server.check import dummy_observation, policy_check, requirements_from_metadata
from policy_server.client import PolicyClient, PolicyError, detect_dialect
from policy_server.relay import serve_relay_in_thread
from policy_server.relay_frames import RELAY_MARKER
from policy_server.relay_token import mint_token
from policy_server.server import serve_in_thread
from policy_server.wire import packb, unpackb

SECRET = "relay secret for the RoboArena config tests"
ROBOARENA_DEFAULT = {
    "image_resolution": [224, 224],
    "needs_wrist_camera": True,
    "n_external_cameras": 1,
    "needs_stereo_camera": False,
    "needs_session_id": False,
    "action_space": "joint_position",
}


@pytest.fixture
def relay() -> Iterator[str]:
    with serve_relay_in_thread(SECRET, upstream_timeout=5.0) as handle:
        yield handle.url


def relayed(relay: str, endpoint: str) -> str:
    """A relayed URL of a session of its own: the relay frees a slot only once it has seen its last close."""
    token = mint_token(
        endpoint=endpoint, session_id=f"s-{uuid.uuid4().hex[:12]}", slot="A", key=SECRET, ttl_s=300
    )
    return f"{relay}/{token}"


def observation_for(config: PolicyServerConfig) -> dict:
    """What our evaluator sends a policy with this config (the health check builds the same)."""
    obs = dummy_observation(requirements_from_metadata(ConfigPolicy(config).metadata))
    obs.pop("session_id", None)
    return obs


def test_the_stand_in_speaks_exactly_the_templates_dialect() -> None:
    """The server these tests call RoboArena's does on the wire what the template does (prior-art.md): its
    metadata frame is ``asdict(PolicyServerConfig)`` and nothing more; ``reset`` hands the rest of the request to
    the policy and answers the text frame ``"reset successful"``; ``infer`` answers the policy's reply as is; a
    request without ``endpoint`` gets the traceback as a text frame, then close 1011 with the template's reason;
    and it serves no ``GET /healthz`` (the template passes no ``process_request``)."""
    config = PolicyServerConfig()
    policy = ConfigPolicy(config)
    with serve_roboarena_in_thread(policy, config) as server:
        with connect(server.url, compression=None, max_size=None, open_timeout=10) as ws:
            assert unpackb(ws.recv(timeout=10)) == ROBOARENA_DEFAULT
            ws.send(packb({"endpoint": "reset", "session_id": "s-1", "episode": 3}))
            assert ws.recv(timeout=10) == "reset successful"
            ws.send(packb({**observation_for(config), "endpoint": "infer"}))
            reply = unpackb(ws.recv(timeout=10))
            assert set(reply) == {"actions"} and reply["actions"].shape == (8, 8)
            ws.send(packb(observation_for(config)))  # no endpoint
            error = ws.recv(timeout=10)
            assert isinstance(error, str) and "KeyError: 'endpoint'" in error
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1011, CLOSE_REASON)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        refused.value.close()  # else the server waits for this socket when it stops
        assert refused.value.code != 200
    assert policy.resets == [{"session_id": "s-1", "episode": 3}]


@pytest.mark.parametrize(
    ("metadata", "dialect"),
    [
        (ROBOARENA_DEFAULT, "roboarena"),
        ({**ROBOARENA_DEFAULT, "image_resolution": None}, "roboarena"),
        # what our relay forwards for image_resolution None: the key has no checkable form, so it is dropped
        ({k: v for k, v in ROBOARENA_DEFAULT.items() if k != "image_resolution"}, "roboarena"),
        ({k: v for k, v in ROBOARENA_DEFAULT.items() if k != "action_space"}, "openpi"),
        ({**ROBOARENA_DEFAULT, RELAY_MARKER: 1}, "openpi"),
        ({"action_space": "joint_velocity"}, "openpi"),
    ],
)
def test_dialect_is_told_by_the_config_keys(metadata: dict, dialect: str) -> None:
    assert detect_dialect(metadata) == dialect


def test_native_frames_config_through_the_relay_gets_endpoint(relay: str) -> None:
    """``image_resolution: None`` used to make the client take the server for plain openpi and omit
    ``endpoint``, which RoboArena's server indexes: ``KeyError: 'endpoint'``."""
    config = PolicyServerConfig(image_resolution=None, action_space="cartesian_velocity")
    policy = ConfigPolicy(config)
    with serve_roboarena_in_thread(policy, config) as server:
        with PolicyClient(relayed(relay, server.url), retries=0) as client:
            assert client.dialect == "roboarena"
            client.reset()
            actions = client.infer(observation_for(config))["actions"]
    assert actions.shape == (8, 7)
    assert policy.frame_shapes["observation/exterior_image_1_left"] == (288, 512, 3)


def test_session_id_in_every_observation_and_in_reset_info(relay: str) -> None:
    config = PolicyServerConfig(needs_session_id=True)
    policy = ConfigPolicy(config)
    with serve_roboarena_in_thread(policy, config) as server:
        with PolicyClient(relayed(relay, server.url), session_id="0f3c-A", retries=0) as client:
            client.reset()
            for _ in range(3):
                assert client.infer(observation_for(config))["actions"].shape == (8, 8)
            client.reset({"episode": 2})
    # Through the relay the policy sees an alias of the session's slot, the same every time, never the id sent.
    (alias,) = set(policy.session_ids)
    assert len(policy.session_ids) == 3 and alias != "0f3c-A" and len(alias) == 32
    # Free-form reset_info ({"episode": 2}) stays with the lab: only the alias reaches the policy.
    assert policy.resets == [{"session_id": alias}, {"session_id": alias}]


def test_a_policy_needing_the_session_id_fails_without_it() -> None:
    """The emulated server is strict where RoboArena's is: the policy indexes ``obs["session_id"]``."""
    config = PolicyServerConfig(needs_session_id=True)
    with serve_roboarena_in_thread(ConfigPolicy(config), config) as server:
        with PolicyClient(server.url, retries=0) as client:
            with pytest.raises(PolicyError, match="KeyError: 'session_id'"):
                client.infer(observation_for(config))


def test_session_id_is_sent_only_to_policies_that_ask(relay: str) -> None:
    policy = EchoPolicy(metadata={**ROBOARENA_DEFAULT, "needs_session_id": False})
    with serve_roboarena_in_thread(policy) as server:
        with PolicyClient(relayed(relay, server.url), session_id="0f3c-B", retries=0) as client:
            client.infer(observation_for(PolicyServerConfig()))
            client.reset()
    assert "session_id" not in policy.seen_keys[0]
    # RoboArena's evaluator always resets with it; through the relay it is the slot's alias.
    assert len(policy.resets) == 1 and len(policy.resets[0]["session_id"]) == 32


@pytest.mark.parametrize("name", list(CONFIG_MATRIX))
def test_every_config_passes_the_health_check(name: str) -> None:
    case = CONFIG_MATRIX[name]
    config = case.config
    policy = ConfigPolicy(config, horizon=case.horizon)
    with serve_roboarena_in_thread(policy, config) as server:
        result = policy_check(server.url)
    assert result.ok, result.message
    assert result.dialect == "roboarena"
    assert result.requirements["action_space"] == config.action_space
    expected_resolution = None if config.image_resolution is None else list(config.image_resolution)
    assert result.requirements["image_resolution"] == expected_resolution
    assert result.requirements["needs_stereo_camera"] == config.needs_stereo_camera
    assert result.requirements["n_external_cameras"] == config.n_external_cameras
    assert result.requirements["needs_session_id"] == config.needs_session_id
    width = 8 if config.action_space.startswith("joint") else 7
    assert (result.requirements["action_horizon"], result.requirements["action_dim"]) == (case.horizon, width)


@pytest.mark.parametrize(
    ("space", "shape"),
    [
        ("cartesian_velocity", (10, 8)),
        ("cartesian_position", (4, 8)),
        ("joint_position", (10, 7)),
        ("joint_velocity", (15, 7)),
    ],
)
def test_a_chunk_that_does_not_fit_the_declared_space_fails_the_check(space: str, shape: tuple) -> None:
    policy = FixedActionsPolicy(np.zeros(shape))
    config = PolicyServerConfig(action_space=space)
    with serve_roboarena_in_thread(policy, config) as server:
        result = policy_check(server.url)
    assert not result.ok and result.error == "bad_action"
    assert f"declares action_space {space!r}" in result.message
    assert str(shape) in result.message


def test_empty_metadata_is_openpi_droid_joint_velocity() -> None:
    """openpi's DROID checkpoints send empty metadata and answer (10, 8) joint velocities: accepted as such."""
    with serve_in_thread(EchoPolicy(metadata={}, horizon=10)) as server:
        result = policy_check(server.url)
    assert result.ok, result.message
    assert result.requirements["action_space"] == "joint_velocity"
    assert result.requirements["image_resolution"] == [224, 224]
    assert (result.requirements["action_horizon"], result.requirements["action_dim"]) == (10, 8)


def test_empty_metadata_with_seven_wide_actions_names_the_default() -> None:
    with serve_in_thread(FixedActionsPolicy(np.zeros((10, 7)))) as server:
        result = policy_check(server.url)
    assert not result.ok and result.error == "bad_action"
    assert "declares no action_space" in result.message and "'joint_velocity'" in result.message
    assert "(10, 7)" in result.message


def test_the_relay_supplies_the_alias_a_policy_needs_even_when_the_lab_omits_it(relay: str) -> None:
    """Otherwise a lab could leave ``session_id`` out and learn which policies crash without it."""
    config = PolicyServerConfig(needs_session_id=True)
    policy = ConfigPolicy(config)
    with serve_roboarena_in_thread(policy, config) as server:
        with PolicyClient(relayed(relay, server.url), retries=0) as client:  # no session_id given
            assert client.infer(observation_for(config))["actions"].shape == (8, 8)
    assert len(policy.session_ids) == 1 and len(policy.session_ids[0]) == 32


class BareArrayPolicy(ConfigPolicy):
    """The template's own ``DummyPolicy``: it answers a bare ``(1, 8)`` array, not ``{"actions": ...}``."""

    def infer(self, obs: dict) -> np.ndarray:  # type: ignore[override]
        return np.zeros((1, 8), dtype=np.float32)


def test_the_templates_bare_array_dummy_policy_fails_the_check() -> None:
    """RoboArena's evaluator reads ``reply["actions"]`` too, so a bare array fails there as it does here."""
    config = PolicyServerConfig()
    with serve_roboarena_in_thread(BareArrayPolicy(config), config) as server:
        result = policy_check(server.url)
    assert not result.ok and result.error == "protocol_error", result.message
