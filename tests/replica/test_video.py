"""Video recording: browser-playable H.264 MP4 at 10 fps from a 15 Hz stream."""

import hashlib

import av
import numpy as np
import pytest

from evaluator_client.episode import run_episode
from evaluator_client.replica import Replica
from evaluator_client.video import VideoRecorder
from policy_server.baselines import make_baseline


def test_subsampling_keeps_two_of_three_steps(tmp_path):
    recorder = VideoRecorder(tmp_path, "x", ["wrist"])
    kept = [step for step in range(15) if recorder.wants_frame(step)]
    assert len(kept) == 10 and kept[0] == 0


def test_episode_videos_decode_as_h264(tmp_path):
    policy = make_baseline("expert")
    robot = Replica("pick_place", seed=0, action_space=policy.metadata["action_space"])
    recorder = VideoRecorder(tmp_path, "episode_a", robot.cameras, source_hz=robot.control_hz)
    run_episode(robot, policy, prompt="x", requirements=policy.metadata, max_steps=45, recorder=recorder)
    files = recorder.close()
    assert [f.camera for f in files] == ["exterior_1", "wrist"]
    for video in files:
        assert video.content_type == "video/mp4" and video.frames == 30
        assert video.size_bytes == video.path.stat().st_size > 0
        assert video.sha256 == hashlib.sha256(video.path.read_bytes()).hexdigest()
        with av.open(str(video.path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert stream.codec_context.pix_fmt == "yuv420p"
            assert (stream.codec_context.width, stream.codec_context.height) == (320, 180)
            assert float(stream.average_rate) == pytest.approx(10.0)
            decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert len(decoded) == 30
        assert decoded[0].std() > 5  # a real picture, not a blank frame


def test_tiled_video_puts_cameras_side_by_side(tmp_path):
    recorder = VideoRecorder(tmp_path, "tile", ["left", "right"], tile=True)
    red = np.zeros((64, 48, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((64, 48, 3), np.uint8)
    blue[..., 2] = 255
    for _ in range(5):
        recorder.add({"left": red, "right": blue})
    (video,) = recorder.close()
    assert (video.width, video.height, video.frames) == (96, 64, 5)
    with av.open(str(video.path)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert frame[32, 10, 0] > 200 and frame[32, 10, 2] < 60
    assert frame[32, 80, 2] > 200 and frame[32, 80, 0] < 60
