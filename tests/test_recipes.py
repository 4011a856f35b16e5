"""The training and testing recipes: the reference protocol unchanged, and the TSN options
(multi-scale corner crops, partial BN, segments for motion, gradient clipping, multi-crop
testing, the --recipe switch)."""
from __future__ import annotations

import random
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import engine
import motion_cnn
import spatial_cnn
from dataloader import InputNormalizer, MotionDataset, SpatialDataset, index_videos, load_split, stream_sources, LAYOUTS
from dataloader.sampling import segment_positions
from dataloader.transforms import (MOTION_SCALES, TSN_SCALES, MultiCrop, fixed_offsets, multiscale_crop_params,
                                   multi_crop_boxes, train_crop)
from models import FrozenStatsBatchNorm2d, build_model, freeze_partial_bn
from tests.frozen import check_record, frozen_threads
from tests.reference_run import FIXTURE, REGENERATE, load_fixture, run_both_streams
from tests.synth import make_dataset
from utils import UserError


def test_reference_recipe_gives_the_scores_written_before_the_tsn_options(tmp_path):
    record, frozen = load_fixture()
    check_record(record, FIXTURE, REGENERATE)  # the numbers hold only where they were written
    with frozen_threads(record):
        scores = run_both_streams(tmp_path, "--recipe", "reference")
    got = {f"{stream}/{video}": s for stream, by_video in scores.items() for video, s in by_video.items()}
    assert sorted(got) == sorted(frozen)
    for key in frozen:  # one epoch of training and the test pass, as on the commit that wrote them
        np.testing.assert_allclose(got[key], frozen[key], rtol=1e-5, atol=1e-5, err_msg=key)


# --- multi-scale corner crops --------------------------------------------------------------

@pytest.mark.parametrize("scales,positions", [(TSN_SCALES, 5), (MOTION_SCALES, 5), (TSN_SCALES, 13)])
def test_multiscale_boxes_take_only_the_allowed_sizes_and_positions(scales, positions):
    height, width, size = 256, 340, 224
    sides = {1.0: 256, 0.875: 224, 0.75: 192, 0.66: 168}
    allowed = [sides[s] for s in scales]
    rng = random.Random(0)
    seen_sizes, seen_positions, flips = Counter(), Counter(), 0
    for _ in range(4000):
        box = multiscale_crop_params(height, width, size, rng, scales, positions)
        assert box.height in allowed and box.width in allowed
        assert abs(allowed.index(box.height) - allowed.index(box.width)) <= 1  # aspect jitter: one step at most
        assert 0 <= box.top <= height - box.height and 0 <= box.left <= width - box.width
        offsets = fixed_offsets(height, width, box.height, box.width, positions)
        assert len(offsets) == positions and (box.top, box.left) in offsets
        seen_sizes[box.height, box.width] += 1
        seen_positions[offsets.index((box.top, box.left))] += 1
        flips += box.flip
    pairs = {(h, w) for h in allowed for w in allowed if abs(allowed.index(h) - allowed.index(w)) <= 1}
    assert set(seen_sizes) == pairs  # every allowed size pair occurs
    assert set(seen_positions) == set(range(positions))  # every position occurs
    assert 1700 < flips < 2300
    # the corners are the frame's corners, the centre its centre
    assert fixed_offsets(256, 340, 224, 224)[:5] == [(0, 0), (0, 116), (32, 0), (32, 116), (16, 58)]


def _uniform_videos(tmp_path, size=(50, 60)):
    """Generated videos whose frames (RGB, flow x and flow y) are all one noise image each, so
    that a crop box shared by every frame and channel gives identical channels."""
    data = make_dataset(tmp_path, clips=1, frames=16, size=size)
    rng = np.random.default_rng(0)
    for folder, shape in ((data.data_root, size + (3,)), (data.flow_root, size)):
        for video in {p.parent for p in folder.rglob("*.jpg")}:  # RGB, and flow x and y, folders
            frames = sorted(video.glob("*.jpg"))
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(frames[0], quality=95)
            for other in frames[1:]:
                shutil.copyfile(frames[0], other)
    split = load_split(data.split_dir, 1)
    sources = {s: stream_sources(s, LAYOUTS["ucf101"], data_root=data.data_root, flow_root=data.flow_root)
               for s in ("spatial", "motion")}
    return {s: index_videos(split.train, "train", src) for s, src in sources.items()}


def test_one_box_per_sample_across_frames_and_flow_channels(tmp_path):
    videos = _uniform_videos(tmp_path)
    spatial = SpatialDataset(videos["spatial"], True, segments=3, input_size=32, train_crop="multiscale")
    motion = MotionDataset(videos["motion"], True, segments=3, input_size=32, train_crop="multiscale",
                           crop_scales=MOTION_SCALES, stack_length=4)
    flipped_seen = set()
    for seed in range(40):
        frames, _ = spatial[(0, seed)]
        assert frames.shape == (3, 3, 32, 32)
        assert all(torch.equal(frames[0], f) for f in frames[1:])  # one box for the 3 segments
        stacks, _ = motion[(1, seed)]
        assert stacks.shape == (3, 8, 32, 32)
        x, y = stacks[:, 0::2], stacks[:, 1::2]
        assert all(torch.equal(x[0, 0], c) for c in x.flatten(0, 1))  # one box for all stacks and channels
        assert all(torch.equal(y[0, 0], c) for c in y.flatten(0, 1))

        # the same draw by hand: a flipped flow crop is the mirrored crop with x -> 255 - x
        video = motion.videos[1]
        rng = random.Random(seed)
        segment_positions(video.frames, 3, rng, 4)
        first_x = Image.open(video.sources[0].path(1)).convert("L")
        first_y = Image.open(video.sources[1].path(1)).convert("L")
        box = multiscale_crop_params(first_x.height, first_x.width, 32, rng, MOTION_SCALES)
        mirrored_x, mirrored_y = train_crop(first_x, 32, box), train_crop(first_y, 32, box)
        expected_x = 255 - mirrored_x if box.flip else mirrored_x
        assert np.array_equal(x[0, 0].numpy(), expected_x) and np.array_equal(y[0, 0].numpy(), mirrored_y)
        if box.flip:
            unflipped = train_crop(first_x, 32, type(box)(box.top, box.left, False, box.height, box.width))
            assert np.array_equal(x[0, 0].numpy(), 255 - unflipped[:, ::-1])
        flipped_seen.add(box.flip)
    assert flipped_seen == {True, False}


def test_motion_segments_draw_one_stack_in_each_part(tmp_path):
    data = make_dataset(tmp_path, clips=1, frames=40, size=(36, 44))
    split = load_split(data.split_dir, 1)
    videos = index_videos(split.train, "train", stream_sources("motion", LAYOUTS["ucf101"], flow_root=data.flow_root))
    reads = []
    dataset = MotionDataset(videos, True, segments=3, input_size=32)
    original = dataset._read_stack
    dataset._read_stack = lambda video, start: reads.append(start) or original(video, start)
    stacks, _ = dataset[(0, 7)]
    assert stacks.shape == (3, 20, 32, 32)
    valid = videos[0].frames - 10 + 1  # 30 valid starts, 10 a segment
    assert [(s - 1) * 3 // valid for s in reads] == [0, 1, 2]


# --- partial BN, gradient clipping ---------------------------------------------------------

def test_partial_bn_freezes_every_bn_but_the_first():
    torch.manual_seed(0)
    model = build_model("resnet18", 5, 20, "none")
    assert freeze_partial_bn(model) == 19
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert not isinstance(norms[0], FrozenStatsBatchNorm2d) and all(isinstance(m, FrozenStatsBatchNorm2d)
                                                                     for m in norms[1:])
    with torch.no_grad():  # statistics unlike the defaults, so that an update would show
        for m in norms:
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.uniform_(0.5, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model.train()
    assert norms[0].training and not any(m.training for m in norms[1:])
    loss = model(torch.randn(4, 20, 32, 32)).logsumexp(1).mean()
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    names = {id(m): n for n, m in model.named_modules()}
    first = names[id(norms[0])]
    for m in norms[1:]:
        for key in ("running_mean", "running_var", "weight", "bias", "num_batches_tracked"):
            name = f"{names[id(m)]}.{key}"
            assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before[f"{first}.running_mean"], after[f"{first}.running_mean"])
    assert not torch.equal(before[f"{first}.weight"], after[f"{first}.weight"])
    assert not torch.equal(before["conv1.weight"], after["conv1.weight"])
    # the state dict keeps nn.BatchNorm2d's keys: a partial-BN checkpoint loads into a plain model
    build_model("resnet18", 5, 20, "none").load_state_dict(after)


def test_partial_bn_and_clipping_through_the_training_script(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data", frames=13, size=(36, 44))
    norms_seen = []
    original = nn.utils.clip_grad_norm_

    def clip(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        total = original(parameters, max_norm, *args, **kwargs)
        norms_seen.append((float(total), float(torch.norm(torch.stack([p.grad.norm() for p in parameters
                                                                          if p.grad is not None])))))
        return total
    monkeypatch.setattr(nn.utils, "clip_grad_norm_", clip)
    out = tmp_path / "run"
    spatial_cnn.main(spatial_cnn.parse_args([
        "--data-root", str(data.data_root), "--split-dir", str(data.split_dir), "--output-dir", str(out),
        "--arch", "resnet18", "--pretrained", "none", "--input-size", "32", "--batch-size", "4", "--workers", "0",
        "--test-frames", "2", "--epochs", "1", "--partial-bn", "--clip-grad-norm", "0.5", "--lr", "0.1"]))
    state = torch.load(out / "checkpoint.pth.tar", weights_only=True)["model"]
    fresh = build_model("resnet18", 3, 3, "none").state_dict()  # pretrained none: BN starts at 0 / 1
    assert not torch.equal(state["bn1.running_mean"], fresh["bn1.running_mean"])
    for key in fresh:
        if key.startswith("layer") and (".bn" in key or "downsample.1" in key):
            assert torch.equal(state[key], fresh[key]), key
    assert len(norms_seen) == 3  # 12 videos / batch 4
    assert all(after <= 0.5 + 1e-4 for _, after in norms_seen) and any(before > 0.5 for before, _ in norms_seen)


# --- multi-crop testing --------------------------------------------------------------------

def test_multi_crop_boxes():
    assert multi_crop_boxes(256, 340, 224, 1) == [(16, 58, False)]
    assert multi_crop_boxes(256, 340, 224, 3) == [(16, 0, False), (16, 58, False), (16, 116, False)]
    ten = multi_crop_boxes(256, 340, 224, 10)
    assert ten[:5] == [(0, 0, False), (0, 116, False), (32, 0, False), (32, 116, False), (16, 58, False)]
    assert ten[5:] == [(t, l, True) for t, l, _ in ten[:5]]
    assert multi_crop_boxes(340, 256, 224, 3) == [(0, 16, False), (58, 16, False), (116, 16, False)]
    with pytest.raises(ValueError):
        MultiCrop(224, 4)


class _Spy(nn.Module):
    """Logits from a fixed linear map of the mean pixel; records every input it gets."""

    def __init__(self, channels: int, classes: int = 3):
        super().__init__()
        self.inputs = []
        torch.manual_seed(0)
        self.weight = torch.randn(channels * 4, classes)

    def forward(self, x):
        self.inputs.append(x.clone())
        return nn.functional.adaptive_avg_pool2d(x, 2).flatten(1) @ self.weight


def test_ten_crops_feed_ten_inputs_per_position_and_average_them():
    positions, videos, size = 4, 3, 24
    frames = torch.randint(0, 256, (videos * positions, 3, 30, 40), dtype=torch.uint8)
    video_idx = torch.arange(videos).repeat_interleave(positions)
    batches = [(frames[i:i + 5], torch.zeros(len(frames[i:i + 5]), dtype=torch.long), video_idx[i:i + 5])
               for i in range(0, len(frames), 5)]
    model = _Spy(3)
    normalizer = InputNormalizer((0.5,) * 3, (0.25,) * 3)
    ctx = engine.Context(torch.device("cpu"), normalizer, None, engine.World(), test_crops=MultiCrop(size, 10))
    result = engine.evaluate(model, batches, ctx, videos, 3, torch.zeros(videos, dtype=torch.long), positions)
    fed = torch.cat(model.inputs)
    assert fed.shape == (10 * positions * videos, 3, size, size)
    # the expected video score: per position, the mean over its 10 crops, summed over positions
    expected = torch.zeros(videos, 3, dtype=torch.float64)
    for f, v in zip(frames, video_idx):
        crops = [f[:, t:t + size, l:l + size] for t, l, _ in multi_crop_boxes(30, 40, size, 10)]
        crops = [c.flip(-1) if flipped else c for c, (_, _, flipped) in zip(crops, multi_crop_boxes(30, 40, size, 10))]
        logits = _Spy(3)(normalizer(torch.stack(crops))).double()
        expected[v] += logits.mean(0)
    torch.testing.assert_close(result["scores"], expected)


@pytest.mark.parametrize("flow", [False, True])
def test_flipped_crops_of_a_mirror_symmetric_frame_score_as_the_unflipped(flow):
    """Left and right halves mirror images (flow: with x negated, 255 - x): the 5 flipped crops
    are the 5 unflipped ones in another order, so their summed scores agree."""
    torch.manual_seed(0)
    channels = 20 if flow else 3
    half = torch.randint(0, 256, (channels, 40, 30), dtype=torch.uint8)
    mirror = half.flip(-1).clone()
    if flow:
        mirror[0::2] = 255 - mirror[0::2]
    frame = torch.cat([half, mirror], dim=-1)[None]  # 40 x 60; 60 - 32 is even: a symmetric centre
    model = build_model("resnet18", 7, channels, "none").eval()
    crops = MultiCrop(32, 10, flow=flow)(frame)
    # the flipped top-left crop is the top-right one, the flipped top-right the top-left
    assert torch.equal(crops[5], crops[1]) and torch.equal(crops[6], crops[0]) and torch.equal(crops[9], crops[4])
    with torch.no_grad():
        logits = model(crops.float() / 255 - 0.5).double()
    torch.testing.assert_close(logits[:5].sum(0), logits[5:].sum(0), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits[0], logits[1])  # the crops differ: the check is not trivial


# --- the --recipe switch ---------------------------------------------------------------------

def test_recipe_sets_tsn_values_and_explicit_flags_win():
    reference = spatial_cnn.parse_args([])
    assert (reference.train_crop, reference.partial_bn, reference.dropout, reference.test_crops) == \
        ("random", False, 0.0, 1)
    tsn = spatial_cnn.parse_args(["--recipe", "tsn"])
    assert (tsn.train_crop, tsn.partial_bn, tsn.dropout, tsn.segments, tsn.clip_grad_norm, tsn.weight_decay,
            tsn.test_frames, tsn.test_crops) == ("multiscale", True, 0.8, 3, 20.0, 5e-4, 25, 10)
    flow = motion_cnn.parse_args(["--recipe", "tsn"])
    assert (flow.dropout, flow.segments, flow.crop_scales, flow.lr_milestones) == (0.7, 3, [1.0, 0.875, 0.75],
                                                                                   [190, 300])
    mixed = motion_cnn.parse_args(["--recipe", "tsn", "--no-partial-bn", "--dropout", "0.5", "--test-crops", "1"])
    assert (mixed.partial_bn, mixed.dropout, mixed.test_crops, mixed.train_crop) == (False, 0.5, 1, "multiscale")


def test_a_resumed_tsn_checkpoint_brings_its_recipe_and_protocol(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", frames=13, size=(36, 44))
    common = ["--flow-root", str(data.flow_root), "--split-dir", str(data.split_dir), "--arch", "resnet18",
              "--pretrained", "none", "--input-size", "32", "--batch-size", "4", "--workers", "0", "--device", "cpu"]
    out = tmp_path / "tsn"
    motion_cnn.main(motion_cnn.parse_args([*common, "--output-dir", str(out), "--recipe", "tsn", "--epochs", "1",
                                           "--test-frames", "3"]))
    info = (out / "motion_video_preds.json").read_text()
    assert '"recipe": "tsn"' in info and '"test_crops": 10' in info
    args = motion_cnn.parse_args([*common, "--output-dir", str(tmp_path / "eval"), "--evaluate", "--resume",
                                  str(out / "checkpoint.pth.tar")])
    result = motion_cnn.main(args)
    assert (args.recipe, args.test_frames, args.test_crops, args.partial_bn) == ("tsn", 3, 10, True)
    assert "settings from" in capsys.readouterr().out and result is not None
    # an explicit --recipe that contradicts the checkpoint's is refused (it is adopted before the other settings)
    with pytest.raises(UserError, match="trained with --recipe tsn, the command line says --recipe reference"):
        motion_cnn.main(motion_cnn.parse_args([*common, "--output-dir", str(tmp_path / "eval3"), "--evaluate",
                                               "--recipe", "reference", "--resume", str(out / "checkpoint.pth.tar")]))
    # a contradicting explicit flag is refused, as for the other stored settings
    with pytest.raises(UserError, match="--test-crops"):
        motion_cnn.main(motion_cnn.parse_args([*common, "--output-dir", str(tmp_path / "eval2"), "--evaluate",
                                               "--test-crops", "3", "--resume", str(out / "checkpoint.pth.tar")]))


def test_multistep_schedule_resumes_on_its_milestones():
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2, 4], gamma=0.1)
    rates = []
    for epoch in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        assert engine.scheduled_lr(scheduler, 1.0, epoch) == pytest.approx(rates[-1])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_no_flip_never_flips_and_drops_the_flipped_test_crops(tmp_path):
    videos = _uniform_videos(tmp_path)["motion"]
    for mode in ("random", "multiscale"):
        flips = {flip: {MotionDataset(videos, True, input_size=32, train_crop=mode, flip=flip, stack_length=4)
                        ._crop_params(50, 60, random.Random(seed)).flip for seed in range(100)}
                 for flip in (True, False)}
        assert flips == {True: {True, False}, False: {False}}
    assert motion_cnn.parse_args(["--recipe", "tsn", "--no-flip"]).test_crops == 5  # the recipe's 10, unflipped
    assert multi_crop_boxes(256, 340, 224, 5) == multi_crop_boxes(256, 340, 224, 10)[:5]
    with pytest.raises(SystemExit):
        motion_cnn.parse_args(["--no-flip", "--test-crops", "10"])


@pytest.mark.parametrize("scaled", [False, True])
def test_a_clipped_step_moves_the_parameters_by_lr_times_the_clipped_gradient(scaled):
    """Clipping must act before the step, on unscaled gradients: with lr 1 and no momentum the
    update's norm is the clip norm (a clip after the step, or of still-scaled gradients, is not)."""
    from dataloader import spatial_normalizer
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    frames = torch.randint(0, 256, (2, 1, 3, 8, 8), dtype=torch.uint8)  # [B, S, C, H, W]
    labels = torch.tensor([0, 2])
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, enabled=scaled)
    ctx = engine.Context(torch.device("cpu"), spatial_normalizer(), None, engine.World(), clip_grad_norm=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    loss = nn.CrossEntropyLoss()(model(spatial_normalizer()(frames.flatten(0, 1))), labels)
    gradient_norm = torch.norm(torch.stack([g.norm() for g in torch.autograd.grad(loss, model.parameters())]))
    assert gradient_norm > 0.1  # far above the clip norm: the clip is what limits the step
    engine.train_one_epoch(model, [(frames, labels)], nn.CrossEntropyLoss(), optimizer, scaler, ctx, 0,
                           engine.Meters())
    update = torch.norm(torch.stack([(p.detach() - b).norm() for p, b in zip(model.parameters(), before)]))
    assert update == pytest.approx(1e-3, rel=1e-3)
