"""Which frames of a video are read: small pure functions, all positions 1-based.

With n frames and a stack length L (10 flow frames in the motion stream), a stack starting at
s reads frames s..s+L-1, so the valid start positions are 1..n-L+1. Both streams use that
range, so that the spatial and the motion stream look at the same moments of a test video.
"""
from __future__ import annotations

import random

STACK_LENGTH = 10
TEST_FRAMES = 19  # the shortest UCF101 video has 28 frames: 28 - 10 + 1 = 19 stacks


def num_valid_starts(num_frames: int, stack_length: int = STACK_LENGTH) -> int:
    """Number of valid start positions; at least 1 for any video with frames, so a short
    video in the spatial stream still gives its first frame."""
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    return max(1, num_frames - stack_length + 1)


def segment_positions(num_frames: int, num_segments: int, rng: random.Random,
                      stack_length: int = STACK_LENGTH) -> list[int]:
    """TSN-style training sample: split the valid range into ``num_segments`` equal parts
    and draw one random position in each."""
    m = num_valid_starts(num_frames, stack_length)
    positions = []
    for k in range(num_segments):
        lo = k * m // num_segments
        hi = max(lo + 1, (k + 1) * m // num_segments)  # a range shorter than the segment count
        positions.append(1 + rng.randrange(lo, min(hi, m)))  # repeats positions instead of failing
    return positions


def random_start(num_frames: int, rng: random.Random, stack_length: int = STACK_LENGTH) -> int:
    """Motion training sample: one random stack start."""
    return 1 + rng.randrange(num_valid_starts(num_frames, stack_length))


def evaluation_positions(num_frames: int, count: int = TEST_FRAMES,
                   stack_length: int = STACK_LENGTH) -> list[int]:
    """Test protocol of the reference: interval = (n-L+1)//count, positions 1 + k*interval.

    A video with fewer valid starts than ``count`` (interval 0) gets evenly spread positions
    with repeats instead of ``count`` copies of frame 1.
    """
    if count < 1:
        raise ValueError(f"the number of test positions must be positive, got {count}")
    m = num_valid_starts(num_frames, stack_length)
    interval = m // count
    if interval == 0:
        return [1 + k * m // count for k in range(count)]
    return [1 + k * interval for k in range(count)]


def centre_positions(num_frames: int, count: int = TEST_FRAMES, stack_length: int = STACK_LENGTH) -> list[int]:
    """TSN's test protocol: the valid range cut into ``count`` equal segments, one position at
    each segment's centre (tsn-pytorch ``_get_test_indices``: tick = (n-L+1)/count,
    ``int(tick/2 + k*tick) + 1``; mmaction2's SampleFrames in test mode gives the same). The
    video's tail after the last frame read is at most half a segment."""
    if count < 1:
        raise ValueError(f"the number of test positions must be positive, got {count}")
    tick = num_valid_starts(num_frames, stack_length) / float(count)
    return [int(tick / 2.0 + tick * k) + 1 for k in range(count)]


TEST_POSITIONS = ("starts", "centres")


def place_test_positions(num_frames: int, count: int = TEST_FRAMES, stack_length: int = STACK_LENGTH,
                   placement: str = "starts") -> list[int]:
    """The test positions of a video: segment ``starts`` (the reference's protocol) or
    segment ``centres`` (TSN's)."""
    if placement == "starts":
        return evaluation_positions(num_frames, count, stack_length)
    if placement == "centres":
        return centre_positions(num_frames, count, stack_length)
    raise ValueError(f"test positions must be one of {TEST_POSITIONS}, got {placement!r}")


def stack_frames(start: int, stack_length: int = STACK_LENGTH, reference_order: bool = False) -> list[int]:
    """Flow frames of a stack, in channel order.

    ``reference_order`` reproduces the reference repo's off-by-one, whose channels hold frames
    start+1..start+L-1 and then start; only needed to evaluate its released checkpoints.
    """
    frames = list(range(start, start + stack_length))
    return frames[1:] + frames[:1] if reference_order else frames
