"""--recipe tsn against TSN itself: test positions, crop positions, multi-crop test views and
learning-rate groups, each compared with TSN's own code written out here from tsn-pytorch
(``dataset.py`` _get_test_indices, ``transforms.py`` GroupMultiScaleCrop.fill_fix_offset,
GroupScale and GroupOverSample, ``models.py`` get_optim_policies) on identical inputs."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image, ImageOps
from torch import nn

import engine
import motion_cnn
import spatial_cnn
from dataloader import SpatialDataset, index_videos, load_split, stream_sources, LAYOUTS
from dataloader.sampling import centre_positions, evaluation_positions, num_valid_starts, place_test_positions
from dataloader.transforms import MultiCrop, fixed_offsets, multicrop_scale_side, rgb_to_tensor, scale_short_side
from dataloader.transforms import test_view as loader_view  # not collected as a test
from inference.windows import Window, plan_motion, plan_spatial
from models import build_model, freeze_partial_bn, parameter_groups
from tests.synth import make_dataset
from tests.test_data import SHARED, real_frame_counts
from utils import UserError


# --- TSN's code, as written in tsn-pytorch ----------------------------------------------------

def tsn_test_indices(num_frames: int, new_length: int, num_segments: int) -> list[int]:
    """tsn-pytorch dataset.py TSNDataSet._get_test_indices (1-based)."""
    tick = (num_frames - new_length + 1) / float(num_segments)
    offsets = np.array([int(tick / 2.0 + tick * x) for x in range(num_segments)])
    return (offsets + 1).tolist()


def mmaction_test_clips(num_frames: int, clip_len: int, num_clips: int) -> list[int]:
    """mmaction2 SampleFrames._get_test_clips (frame_interval 1, 0-based, + 1 here)."""
    avg_interval = (num_frames - clip_len + 1) / float(num_clips)
    base_offsets = np.arange(num_clips) * avg_interval
    return ((base_offsets + avg_interval / 2.0).astype(np.int32) + 1).tolist()


def tsn_fill_fix_offset(more_fix_crop: bool, image_w: int, image_h: int, crop_w: int, crop_h: int):
    """tsn-pytorch transforms.py GroupMultiScaleCrop.fill_fix_offset: (w_offset, h_offset)."""
    w_step = (image_w - crop_w) // 4
    h_step = (image_h - crop_h) // 4
    ret = [(0, 0), (4 * w_step, 0), (0, 4 * h_step), (4 * w_step, 4 * h_step), (2 * w_step, 2 * h_step)]
    if more_fix_crop:
        ret += [(0, 2 * h_step), (4 * w_step, 2 * h_step), (2 * w_step, 4 * h_step), (2 * w_step, 0 * h_step),
                (1 * w_step, 1 * h_step), (3 * w_step, 1 * h_step), (1 * w_step, 3 * h_step),
                (3 * w_step, 3 * h_step)]
    return ret


def tsn_over_sample(img_group: list[Image.Image], crop_size: int, scale_size: int) -> list[Image.Image]:
    """tsn-pytorch transforms.py GroupOverSample(crop_size, scale_size), GroupScale = torchvision's
    Resize (bilinear)."""
    img_group = [torchvision.transforms.Resize(scale_size, Image.BILINEAR)(img) for img in img_group]
    image_w, image_h = img_group[0].size
    out = []
    for o_w, o_h in tsn_fill_fix_offset(False, image_w, image_h, crop_size, crop_size):
        normal, flipped = [], []
        for i, img in enumerate(img_group):
            crop = img.crop((o_w, o_h, o_w + crop_size, o_h + crop_size))
            normal.append(crop)
            flip = crop.copy().transpose(Image.FLIP_LEFT_RIGHT)
            flipped.append(ImageOps.invert(flip) if img.mode == "L" and i % 2 == 0 else flip)
        out.extend(normal)
        out.extend(flipped)
    return out


def tsn_optim_policies(model: nn.Module, flow: bool, partial_bn: bool) -> list[dict]:
    """tsn-pytorch models.py TSN.get_optim_policies (Conv2d/Conv1d, Linear, BatchNorm2d)."""
    first_conv_weight, first_conv_bias, normal_weight, normal_bias, bn = [], [], [], [], []
    conv_cnt = bn_cnt = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d)):
            ps = list(m.parameters())
            conv_cnt += 1
            if conv_cnt == 1:
                first_conv_weight.append(ps[0])
                if len(ps) == 2:
                    first_conv_bias.append(ps[1])
            else:
                normal_weight.append(ps[0])
                if len(ps) == 2:
                    normal_bias.append(ps[1])
        elif isinstance(m, nn.Linear):
            ps = list(m.parameters())
            normal_weight.append(ps[0])
            if len(ps) == 2:
                normal_bias.append(ps[1])
        elif isinstance(m, nn.BatchNorm2d):
            bn_cnt += 1
            if not partial_bn or bn_cnt == 1:  # later BNs are frozen
                bn.extend(list(m.parameters()))
    return [{"params": first_conv_weight, "lr_mult": 5 if flow else 1, "decay_mult": 1, "name": "first_conv_weight"},
            {"params": first_conv_bias, "lr_mult": 10 if flow else 2, "decay_mult": 0, "name": "first_conv_bias"},
            {"params": normal_weight, "lr_mult": 1, "decay_mult": 1, "name": "normal_weight"},
            {"params": normal_bias, "lr_mult": 2, "decay_mult": 0, "name": "normal_bias"},
            {"params": bn, "lr_mult": 1, "decay_mult": 0, "name": "BN scale/shift"}]


# --- test positions -----------------------------------------------------------------------------

def test_centre_positions_are_tsns_and_mmaction2s_for_many_videos():
    checked = 0
    for length in (1, 5, 10):
        for frames in range(length, 400):
            for segments in (1, 3, 7, 19, 25):
                ours = centre_positions(frames, segments, length)
                assert ours == tsn_test_indices(frames, length, segments), (frames, length, segments)
                assert ours == mmaction_test_clips(frames, length, segments), (frames, length, segments)
                assert all(1 <= p and p + length - 1 <= frames for p in ours)
                checked += 1
    assert checked > 5000


def test_starts_stay_the_reference_protocol():
    for frames in (28, 100, 163, 500):
        assert place_test_positions(frames, 19, 10, "starts") == evaluation_positions(frames, 19, 10)
    with pytest.raises(ValueError, match="centres"):
        place_test_positions(100, 19, 10, "middle")


def _tail_shares(placement: str, stack_length: int, flow: bool, count: int = 25) -> list[float]:
    """For every UCF101 testlist01 video: the share of its frames after the last frame read."""
    counts = {name.lower(): n for name, n in real_frame_counts().items()}  # HandStand/Handstand
    names = [line.split()[0].split("/")[1].rsplit(".", 1)[0]
             for line in (SHARED / "testlist01.txt").read_text().split("\n") if line.strip()]
    shares = []
    for name in names:
        n = counts[name.lower()] - (1 if flow else 0)  # flow frames are one fewer
        last = max(place_test_positions(n, count, stack_length, placement)) + stack_length - 1
        tail = n - last
        segment = num_valid_starts(n, stack_length) / count
        assert tail <= segment, (name, placement, tail, segment)  # never more than one segment unseen
        shares.append(tail / n)
    return shares


def test_centres_see_the_end_of_every_ucf101_test_video():
    """TSN's coverage (the issue's figures: tail after the last frame read averages 1.6%, at
    most 2%), for the motion stream (L=10, flow frames) and the spatial stream (L=1)."""
    for stack_length, flow in ((10, True), (1, False)):
        shares = _tail_shares("centres", stack_length, flow)
        assert len(shares) == 3783 and np.mean(shares) < 0.02 and max(shares) <= 0.021
    # the reference's segment starts leave far more unseen (which the test above would refuse)
    counts = real_frame_counts()
    starts_tail = [(n - 1 - (max(evaluation_positions(n - 1, 25, 10)) + 9)) / (n - 1) for n in counts.values()]
    assert np.mean(starts_tail) > 0.05


def test_the_tsn_recipe_places_test_items_at_segment_centres(tmp_path):
    data = make_dataset(tmp_path, clips=1, frames=16, size=(40, 50))
    split = load_split(data.split_dir, 1)
    source = stream_sources("spatial", LAYOUTS["ucf101"], data_root=data.data_root)
    videos = index_videos(split.test, "test", source)
    args = spatial_cnn.parse_args(["--recipe", "tsn", "--test-frames", "5"])
    dataset = SpatialDataset(videos, False, test_mode="crops", **engine.dataset_options(args))
    for v, video in enumerate(videos):
        got = [p for i, p in dataset.test_items if i == v]
        assert got == tsn_test_indices(video.frames, 1, 5)  # RGB: L = 1, up to the last frame


def test_predict_plans_the_checkpoints_positions():
    windows = [Window(0, 100, 0.0, 4.0), Window(40, 140, 1.6, 5.6)]
    spatial = plan_spatial(windows, [25, 25], 1, "centres")
    assert [f[0] for f in spatial.inputs[0]] == [p - 1 for p in tsn_test_indices(100, 1, 25)]
    assert [f[0] for f in spatial.inputs[1]] == [40 + p - 1 for p in tsn_test_indices(100, 1, 25)]
    motion = plan_motion(windows, [25, 25], 10, 200, placement="centres")
    assert [stack[0] for stack in motion.inputs[0]] == [p - 1 for p in tsn_test_indices(99, 10, 25)]
    starts = plan_motion(windows, [25, 25], 10, 200)
    assert [stack[0] for stack in starts.inputs[0]] == [p - 1 for p in evaluation_positions(99, 25, 10)]


# --- crop positions and multi-crop test views ---------------------------------------------------

@pytest.mark.parametrize("more", [False, True])
def test_fixed_crop_positions_are_tsns(more):
    for image_h, image_w in ((256, 340), (240, 320), (256, 341), (331, 257), (224, 224)):
        for crop in (224, 192, 168, 256):
            for crop_h, crop_w in ((crop, crop), (crop, 192)):
                if crop_h > image_h or crop_w > image_w:
                    continue
                ours = fixed_offsets(image_h, image_w, crop_h, crop_w, 13 if more else 5)
                theirs = [(h, w) for w, h in tsn_fill_fix_offset(more, image_w, image_h, crop_w, crop_h)]
                assert ours == theirs


def test_both_tsn_recipes_train_with_13_crop_positions():
    for script in (spatial_cnn, motion_cnn):
        args = script.parse_args(["--recipe", "tsn"])
        assert (args.crop_positions, args.test_positions, args.test_scale, args.lr_groups) == \
            (13, "centres", "tsn", "tsn")
        assert script.parse_args([]).crop_positions == 5  # the reference draws random crops; default untouched
    assert spatial_cnn.parse_args(["--recipe", "tsn"]).stack_length == 1
    assert motion_cnn.parse_args(["--recipe", "tsn"]).stack_length == 10


@pytest.mark.parametrize("flow", [False, True])
@pytest.mark.parametrize("size", [(240, 320), (256, 340), (300, 400), (200, 266)])
def test_ten_crops_are_tsns_over_sample_on_frames_of_any_size(flow, size):
    """GroupScale(256) then GroupOverSample(224): ours scales the short side in the loader
    (--test-scale tsn) and cuts the crops on the device."""
    rng = np.random.default_rng(0)
    height, width = size
    mode = "L" if flow else "RGB"
    shape = (height, width) if flow else (height, width, 3)
    frames = [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode) for _ in range(2 if flow else 1)]
    side = multicrop_scale_side("tsn", 224)
    assert side == 256
    views = [loader_view(f, 224, "crops", side) for f in frames]
    if flow:  # one x, one y channel
        batch = torch.from_numpy(np.stack(views))[None]
    else:
        batch = rgb_to_tensor(views)
    ours = MultiCrop(224, 10, flow=flow)(batch)  # [10, C, 224, 224]: 5 crops, then the 5 flipped
    theirs = tsn_over_sample(frames, 224, 256)  # per offset: the group, then the flipped group
    group = len(frames)
    for k in range(5):
        for flipped in (0, 1):
            expected = theirs[(2 * k + flipped) * group:(2 * k + flipped + 1) * group]
            got = ours[k + 5 * flipped]
            for c, image in enumerate(expected):
                array = np.asarray(image)
                array = array.transpose(2, 0, 1) if array.ndim == 3 else array[None]
                channels = got[c:c + 1] if flow else got
                assert np.array_equal(channels.numpy(), array), (k, flipped, c)


def test_the_stored_size_is_cropped_as_stored():
    img = Image.fromarray(np.zeros((240, 320, 3), np.uint8))
    assert loader_view(img, 224, "crops").shape == (240, 320, 3)
    assert scale_short_side(img, 256).size == (341, 256)  # torchvision Resize(256): long side truncated
    assert multicrop_scale_side("stored", 224) is None and multicrop_scale_side("tsn", 112) == 128


# --- learning-rate groups -----------------------------------------------------------------------

class _BiasedNet(nn.Module):
    """Convs with biases, so that every TSN group is populated."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 4, 3, bias=True)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, bias=True)
        self.bn2 = nn.BatchNorm2d(4)
        self.conv3 = nn.Conv2d(4, 4, 1, bias=False)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.conv3(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("flow", [False, True])
@pytest.mark.parametrize("partial_bn", [False, True])
@pytest.mark.parametrize("make", [lambda c: _BiasedNet(c), lambda c: build_model("resnet18", 5, c, "none")])
def test_lr_groups_are_tsns(flow, partial_bn, make):
    model = make(20 if flow else 3)
    if partial_bn:
        freeze_partial_bn(model)
    ours = parameter_groups(model, "tsn", lr=0.01, weight_decay=5e-4, flow=flow)
    theirs = [g for g in tsn_optim_policies(model, flow, partial_bn) if g["params"]]
    assert len(ours) == len(theirs)
    for mine, tsn in zip(ours, theirs):
        assert [id(p) for p in mine["params"]] == [id(p) for p in tsn["params"]], tsn["name"]
        assert mine["lr_mult"] == tsn["lr_mult"] and mine["decay_mult"] == tsn["decay_mult"], tsn["name"]
        assert mine["lr"] == pytest.approx(0.01 * tsn["lr_mult"])
        assert mine["weight_decay"] == pytest.approx(5e-4 * tsn["decay_mult"])
    grouped = {id(p) for g in ours for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert grouped == trainable  # every trained parameter once; partial BN's frozen ones in none


def test_single_group_is_every_parameter():
    model = build_model("resnet18", 5, 3, "none")
    (group,) = parameter_groups(model, "single", lr=0.1, weight_decay=0.0, flow=False)
    assert [id(p) for p in group["params"]] == [id(p) for p in model.parameters()] and set(group) == {"params"}


def test_an_unknown_layer_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4))
    with pytest.raises(ValueError, match="GroupNorm"):
        parameter_groups(model, "tsn", 0.1, 0.0, flow=False)


def test_the_tsn_recipe_trains_resumes_and_schedules_its_groups(tmp_path):
    data = make_dataset(tmp_path / "data", frames=13, size=(36, 44))
    common = ["--flow-root", str(data.flow_root), "--split-dir", str(data.split_dir), "--arch", "resnet18",
              "--pretrained", "none", "--input-size", "32", "--batch-size", "4", "--workers", "0", "--device", "cpu",
              "--recipe", "tsn", "--test-frames", "3", "--test-crops", "1", "--lr", "0.01", "--lr-milestones", "1"]
    out = tmp_path / "run"
    motion_cnn.main(motion_cnn.parse_args([*common, "--output-dir", str(out), "--epochs", "1"]))
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=True)
    groups = {g["name"]: g for g in ckpt["optimizer"]["param_groups"]}
    assert set(groups) == {"first_conv_weight", "normal_weight", "normal_bias", "bn"}
    # after epoch 1 the multistep schedule (milestone 1) multiplied every group's rate by 0.1
    assert groups["first_conv_weight"]["lr"] == pytest.approx(0.01 * 5 * 0.1)
    assert groups["normal_bias"]["lr"] == pytest.approx(0.01 * 2 * 0.1)
    assert groups["normal_weight"]["lr"] == pytest.approx(0.01 * 0.1)
    assert groups["normal_bias"]["weight_decay"] == 0 and groups["normal_weight"]["weight_decay"] == 5e-4
    rows = list(csv.DictReader(open(out / "train.csv")))
    assert float(rows[0]["lr"]) == pytest.approx(0.01)  # the base rate is what the log shows
    info = (out / "motion_video_preds.json").read_text()
    assert '"test_positions": "centres"' in info and '"test_scale": "tsn"' in info
    # resumed with a new base rate and decay: every group keeps its multipliers
    motion_cnn.main(motion_cnn.parse_args([*common, "--output-dir", str(out), "--epochs", "2", "--resume",
                                           str(out / "checkpoint.pth.tar"), "--lr", "0.02",
                                           "--weight-decay", "1e-3"]))
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=True)
    groups = {g["name"]: g for g in ckpt["optimizer"]["param_groups"]}
    assert groups["first_conv_weight"]["lr"] == pytest.approx(0.02 * 5 * 0.1)
    assert groups["first_conv_weight"]["weight_decay"] == pytest.approx(1e-3)
    assert groups["bn"]["weight_decay"] == 0
    # the groups are a fixed setting of the checkpoint: the optimizer state depends on them
    with pytest.raises(UserError, match="--lr-groups"):
        motion_cnn.main(motion_cnn.parse_args([*common, "--output-dir", str(out), "--epochs", "3", "--resume",
                                               str(out / "checkpoint.pth.tar"), "--lr-groups", "single",
                                               "--override-checkpoint-settings"]))


def test_a_checkpoint_from_before_the_settings_keeps_its_protocol(tmp_path):
    """A tsn checkpoint written before --test-positions/--test-scale/--lr-groups existed is
    evaluated as it was tested then (segment starts, frames as stored) and resumes with one group."""
    args = motion_cnn.parse_args(["--recipe", "tsn"])
    taken = engine.apply_checkpoint_settings(args, {"recipe": "tsn", "stack_length": 10}, "old.pth.tar")
    assert (args.test_positions, args.test_scale, args.lr_groups) == ("starts", "stored", "single")
    assert "--test-positions starts" in taken


def test_tsn_test_scale_truncates_the_long_side_as_torchvision_resize():
    """tsn-pytorch's GroupScale is torchvision's Resize(int): a 267x200 frame scaled to a short
    side of 256 is 341 wide (341.76 truncated), not 342."""
    from PIL import Image
    from torchvision import transforms

    from dataloader.transforms import scale_short_side
    for size in ((267, 200), (200, 267), (341, 256), (401, 299)):
        image = Image.new("RGB", size)
        assert scale_short_side(image, 256).size == transforms.Resize(256)(image).size, size
    assert scale_short_side(Image.new("RGB", (267, 200)), 256).size == (341, 256)
