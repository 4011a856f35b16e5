"""Batched TV-L1 on tensors against OpenCV's DualTVL1 and ground truth; compute_flow's tensor methods."""
from __future__ import annotations

import os
import urllib.error

import cv2
import numpy as np
import pytest
import torch

from flow import TVL1
from flow.synthetic import warped_pair
from flow.tvl1 import divergence, forward_gradient, median_filter, median_filter_network, median_network
from tests.test_preprocessing import textured_video
from tools import compute_flow, extract_frames
from utils import UserError


def test_accuracy_matches_opencv_on_known_flow():
    cv2.setNumThreads(1)
    opencv = cv2.optflow.DualTVL1OpticalFlow_create()
    ours = TVL1()
    margin = 8  # flow near the border is undetermined for both
    for magnitude in (1.0, 4.0, 10.0):
        pairs = [warped_pair(64, 80, magnitude, seed) for seed in range(2)]
        first = torch.from_numpy(np.stack([p[0] for p in pairs]))
        second = torch.from_numpy(np.stack([p[1] for p in pairs]))
        batched = ours(first, second).permute(0, 2, 3, 1).numpy()  # both pairs in one launch
        for k, (a, b, truth) in enumerate(pairs):
            reference = opencv.calc(a, b, None)
            inner = (slice(margin, -margin), slice(margin, -margin))
            epe_ours = np.linalg.norm(batched[k][inner] - truth[inner], axis=-1).mean()
            epe_opencv = np.linalg.norm(reference[inner] - truth[inner], axis=-1).mean()
            agreement = np.linalg.norm(batched[k][inner] - reference[inner], axis=-1).mean()
            assert epe_ours <= 1.1 * epe_opencv + 0.01, (magnitude, epe_ours, epe_opencv)
            assert agreement < 0.1 + 0.03 * magnitude, (magnitude, agreement)  # 0.13 / 0.22 / 0.4 px
            assert epe_ours < 0.25 * magnitude + 0.15  # and both are actually right


def test_divergence_is_the_adjoint_of_the_forward_gradient():
    torch.manual_seed(0)
    u, p1, p2 = torch.randn(1, 1, 7, 9), torch.randn(1, 1, 7, 9), torch.randn(1, 1, 7, 9)
    p1[..., -1], p2[..., -1, :] = 0, 0  # where the forward gradient is zero, as the dual variables are
    gx, gy = forward_gradient(u)
    # <grad u, p> = -<u, div p>
    assert torch.allclose((gx * p1 + gy * p2).sum(), -(u * divergence(p1, p2)).sum(), atol=1e-5)
    image = torch.randint(0, 255, (1, 1, 9, 11)).float()
    expected = cv2.medianBlur(image[0, 0].numpy().astype(np.float32), 5)
    assert np.allclose(median_filter(image, 5)[0, 0].numpy(), expected)


def test_the_median_network_is_an_exact_median():
    torch.manual_seed(0)
    x = torch.randn(2, 2, 13, 17)
    x[0, 0, 2:6] = 0.5  # ties
    for size in (3, 5):
        assert torch.equal(median_filter_network(x, size), median_filter(x, size))
    steps, _ = median_network(25)
    assert sum(step[0] == "cmp" for step in steps) < 191  # pruned below the full 32-wire sort


def _frames(tmp_path, dx=1.5, dy=-1.0, frames=4):
    videos = tmp_path / "videos" / "Move"
    videos.mkdir(parents=True)
    textured_video(videos / "v_Move_g01_c01.avi", dx, dy, frames=frames)
    args = extract_frames.get_args_parser().parse_args([str(tmp_path / "videos"), str(tmp_path / "frames"),
                                                        "--size", "0", "0", "--workers", "1"])
    assert extract_frames.main(args) == 0
    return tmp_path / "frames"


def _flow(frames, out, *extra):
    args = compute_flow.get_args_parser().parse_args([str(frames), str(out), "--workers", "1", *extra])
    return compute_flow.main(args)


def test_tvl1_torch_writes_what_opencv_writes(tmp_path):
    frames = _frames(tmp_path)
    assert _flow(frames, tmp_path / "cv", "--method", "tvl1") == 0
    assert _flow(frames, tmp_path / "torch", "--method", "tvl1-torch", "--device", "cpu", "--batch", "2") == 0
    for axis in ("u", "v"):
        names = sorted(os.listdir(tmp_path / "cv" / axis / "v_Move_g01_c01"))
        assert names == sorted(os.listdir(tmp_path / "torch" / axis / "v_Move_g01_c01")) and len(names) == 3
        for name in names:
            a = cv2.imread(str(tmp_path / "cv" / axis / "v_Move_g01_c01" / name), cv2.IMREAD_GRAYSCALE).astype(float)
            b = cv2.imread(str(tmp_path / "torch" / axis / "v_Move_g01_c01" / name), cv2.IMREAD_GRAYSCALE).astype(float)
            assert a.shape == b.shape and np.abs(a - b)[8:-8, 8:-8].mean() < 1.0  # < 1 level = 0.16 px


def test_raft_runs_from_a_local_file_and_says_how_to_get_weights(tmp_path, monkeypatch):
    frames = _frames(tmp_path, frames=3)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(UserError, match="(?s)could not load RAFT weights .*--raft-weights PATH"):
        _flow(frames, tmp_path / "raft", "--method", "raft", "--device", "cpu")
    with pytest.raises(UserError, match="RAFT weights file not found: .*x.pth"):
        _flow(frames, tmp_path / "raft", "--method", "raft", "--device", "cpu", "--raft-weights", str(tmp_path / "x.pth"))
    from torchvision.models.optical_flow import raft_large
    torch.manual_seed(0)
    weights = tmp_path / "raft.pth"
    torch.save(raft_large(weights=None).state_dict(), weights)  # untrained: checks the plumbing, not accuracy
    assert _flow(frames, tmp_path / "raft", "--method", "raft", "--device", "cpu", "--raft-weights", str(weights)) == 0
    for axis in ("u", "v"):
        names = sorted(os.listdir(tmp_path / "raft" / axis / "v_Move_g01_c01"))
        assert names == ["frame000001.jpg", "frame000002.jpg"]
        image = cv2.imread(str(tmp_path / "raft" / axis / "v_Move_g01_c01" / names[0]), cv2.IMREAD_GRAYSCALE)
        assert image.shape == (64, 80)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    a, b, _ = warped_pair(96, 128, 5.0, 0)
    first, second = torch.from_numpy(a)[None], torch.from_numpy(b)[None]
    cpu = TVL1()(first, second)
    gpu = TVL1(compile=True)(first.cuda(), second.cuda()).cpu()
    assert (cpu - gpu).norm(dim=1).mean() < 0.05


def test_tensor_quantisation_rounds_like_the_numpy_one():
    from flow.storage import quantize, quantize_tensor
    flow = np.linspace(-25, 25, 2001, dtype=np.float32).reshape(1, -1)  # fractions of every kind, and clipping
    expected = quantize(flow, 20.0)
    assert np.array_equal(quantize_tensor(torch.from_numpy(flow), 20.0).numpy(), expected)
    assert expected[0, 1000] == 128 and expected[0, 0] == 0 and expected[0, -1] == 255  # 0 px: 127.5 -> 128
