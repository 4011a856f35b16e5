"""Batched TV-L1 optical flow on PyTorch tensors (CPU or CUDA).

The duality-based TV-L1 of Zach, Pock and Bischof (DAGM 2007) as OpenCV's DualTVL1
implements it, step for step and with its default parameters: a coarse-to-fine pyramid
(scale 0.8, bilinear), at each scale ``warps`` bicubic warpings of the second image, and for
each warping up to ``outer`` x ``inner`` primal-dual iterations with a 5x5 median filter of
the flow before each outer iteration, stopping early when the flow update falls below
``epsilon``. Many frame pairs run in one batch; each pair keeps its own stopping state.

Flow convention (OpenCV's): ``flow[:, 0]`` (x) and ``flow[:, 1]`` (y) at pixel p of the first
image point to where p is in the second: I0(p) ~ I1(p + flow(p)).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class TVL1Params:
    """OpenCV DualTVL1's defaults."""

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    median_filtering: int = 5


def centered_gradient(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences, one-sided (halved) at the borders, as OpenCV's centeredGradient."""
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
    dx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
    dy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
    return dx, dy


def forward_gradient(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences, zero on the last column / row."""
    dx = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    return dx, dy


def divergence(p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """Backward differences with zero outside the image (the adjoint of forward_gradient)."""
    return (p1 - F.pad(p1[..., :, :-1], (1, 0, 0, 0))) + (p2 - F.pad(p2[..., :-1, :], (0, 0, 1, 0)))


def median_filter(u: torch.Tensor, size: int) -> torch.Tensor:
    """size x size median with replicated borders (OpenCV's medianBlur), by sorting patches:
    the fast way in eager mode."""
    r = size // 2
    padded = F.pad(u, (r, r, r, r), mode="replicate")
    patches = padded.unfold(-2, size, 1).unfold(-2, size, 1)  # B, C, H, W, size, size
    return patches.reshape(*patches.shape[:-2], size * size).median(dim=-1).values


@functools.lru_cache(maxsize=None)
def median_network(count: int) -> tuple[list[tuple[str, int, int, bool, bool]], int]:
    """A comparator network that leaves the median of ``count`` (odd) inputs on one wire.

    Batcher's odd-even merge sort of the next power of two, with the extra wires held at
    -inf / +inf and resolved at build time (their comparators become free swaps), then pruned
    to the comparators the median depends on. Returns (steps, output wire); a step is
    ('swap', a, b, _, _) or ('cmp', a, b, need_min, need_max)."""
    n = 1 << (count - 1).bit_length()
    below, above = (n - count + 1) // 2, (n - count) // 2
    pairs, p = [], 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    kind = ["var"] * count + ["lo"] * below + ["hi"] * above
    steps = []
    for a, b in pairs:  # min goes to a, max to b
        if kind[a] == "lo" or kind[b] == "hi" or kind[a] == kind[b] != "var":
            continue
        if kind[a] == "var" and kind[b] == "var":
            steps.append(["cmp", a, b])
        else:  # a constant on the wrong side: the values trade places, no arithmetic
            steps.append(["swap", a, b])
            kind[a], kind[b] = kind[b], kind[a]
    output = below + count // 2
    needed, kept = {output}, []
    for step in reversed(steps):
        op, a, b = step
        if op == "swap":
            needed = {b if x == a else a if x == b else x for x in needed}
            kept.append(("swap", a, b, False, False))
        elif a in needed or b in needed:
            kept.append(("cmp", a, b, a in needed, b in needed))
            needed |= {a, b}
    return kept[::-1], output


def median_filter_network(u: torch.Tensor, size: int) -> torch.Tensor:
    """The same median as :func:`median_filter` as pure elementwise min/max: slow in eager
    mode, but torch.compile fuses it into one kernel that keeps the patch in registers."""
    r = size // 2
    h, w = u.shape[-2:]
    padded = F.pad(u, (r, r, r, r), mode="replicate")
    wires: list = [padded[..., dy:dy + h, dx:dx + w] for dy in range(size) for dx in range(size)]
    steps, output = median_network(size * size)
    wires += [None] * (1 << (len(wires) - 1).bit_length())
    for op, a, b, need_min, need_max in steps:
        if op == "swap":
            wires[a], wires[b] = wires[b], wires[a]
        else:
            x, y = wires[a], wires[b]
            if need_min:
                wires[a] = torch.minimum(x, y)
            if need_max:
                wires[b] = torch.maximum(x, y)
    return wires[output]


def warp(image: torch.Tensor, flow: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` at p + flow(p), bicubic, zero outside (OpenCV's remap INTER_CUBIC with
    a constant border)."""
    h, w = image.shape[-2:]
    x = (base[0] + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    y = (base[1] + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((x, y), dim=-1)
    return F.grid_sample(image, grid, mode="bicubic", padding_mode="zeros", align_corners=True)


def _iteration(u, p11, p12, p21, p22, i1wx, i1wy, grad, rho_c, active, l_t: float, theta: float, taut: float):
    """One primal-dual iteration (estimateV, estimateU, dual update) for the whole batch; samples
    with ``active`` False keep their state. Returns the new state and each sample's update size."""
    u1, u2 = u[:, 0:1], u[:, 1:2]
    rho = rho_c + i1wx * u1 + i1wy * u2
    bound = l_t * grad
    safe = torch.where(grad > torch.finfo(grad.dtype).eps, grad, torch.ones_like(grad))
    step = torch.where(rho < -bound, torch.full_like(rho, l_t),
                       torch.where(rho > bound, torch.full_like(rho, -l_t),
                                   torch.where(grad > torch.finfo(grad.dtype).eps, -rho / safe, torch.zeros_like(rho))))
    v1, v2 = u1 + step * i1wx, u2 + step * i1wy
    new_u1 = v1 + theta * divergence(p11, p12)
    new_u2 = v2 + theta * divergence(p21, p22)
    error = ((new_u1 - u1) ** 2 + (new_u2 - u2) ** 2).sum(dim=(1, 2, 3))
    new_u = torch.where(active, torch.cat((new_u1, new_u2), dim=1), u)
    u1x, u1y = forward_gradient(new_u[:, 0:1])
    u2x, u2y = forward_gradient(new_u[:, 1:2])
    ng1 = 1.0 + taut * torch.sqrt(u1x * u1x + u1y * u1y)
    ng2 = 1.0 + taut * torch.sqrt(u2x * u2x + u2y * u2y)
    p11 = torch.where(active, (p11 + taut * u1x) / ng1, p11)
    p12 = torch.where(active, (p12 + taut * u1y) / ng1, p12)
    p21 = torch.where(active, (p21 + taut * u2x) / ng2, p21)
    p22 = torch.where(active, (p22 + taut * u2y) / ng2, p22)
    return new_u, p11, p12, p21, p22, error


class TVL1:
    """TV-L1 flow for batches of grey frame pairs.

    ``compile`` fuses the inner iteration with torch.compile (Triton kernels on CUDA), which
    turns a dozen memory-bound elementwise passes into a few; ``check_every`` sets how often
    (in inner iterations) the early-stopping test synchronises with the device.
    """

    def __init__(self, params: TVL1Params = TVL1Params(), compile: bool = False, check_every: int = 10):
        self.params = params
        self.check_every = check_every
        self.iteration = torch.compile(_iteration, dynamic=True) if compile else _iteration
        self.median = torch.compile(median_filter_network, dynamic=True) if compile else median_filter

    @torch.no_grad()
    def __call__(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """first, second: [B, H, W] or [B, 1, H, W] grey images, 0..255 (uint8 or float).
        Returns flow [B, 2, H, W] float32 in pixels."""
        if first.dim() == 3:
            first, second = first.unsqueeze(1), second.unsqueeze(1)
        if first.shape != second.shape:
            raise ValueError(f"frame pairs differ in shape: {tuple(first.shape)} vs {tuple(second.shape)}")
        p = self.params
        pyramid = [(first.float(), second.float())]
        for _ in range(1, p.nscales):
            i0, i1 = pyramid[-1]
            h, w = round(i0.shape[-2] * p.scale_step), round(i0.shape[-1] * p.scale_step)
            if h < 16 or w < 16:
                break
            pyramid.append((F.interpolate(i0, size=(h, w), mode="bilinear", align_corners=False),
                            F.interpolate(i1, size=(h, w), mode="bilinear", align_corners=False)))
        b = first.shape[0]
        flow = torch.zeros(b, 2, *pyramid[-1][0].shape[-2:], device=first.device)
        for level in range(len(pyramid) - 1, -1, -1):
            i0, i1 = pyramid[level]
            flow = self._one_scale(i0, i1, flow)
            if level:
                finer = pyramid[level - 1][0].shape[-2:]
                flow = F.interpolate(flow, size=finer, mode="bilinear", align_corners=False) / p.scale_step
        return flow

    def _one_scale(self, i0: torch.Tensor, i1: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        p = self.params
        b, _, h, w = i0.shape
        scaled_epsilon = p.epsilon * p.epsilon * h * w
        l_t, taut = p.lambda_ * p.theta, p.tau / p.theta
        i1x, i1y = centered_gradient(i1)
        base = torch.stack(torch.meshgrid(torch.arange(w, device=i0.device, dtype=torch.float32),
                                          torch.arange(h, device=i0.device, dtype=torch.float32), indexing="xy"))
        base = base.unsqueeze(1)  # 2, 1, H, W -> broadcast over the batch
        dual = [torch.zeros_like(i0) for _ in range(4)]
        for _ in range(p.warps):
            warped = warp(torch.cat((i1, i1x, i1y), dim=1), u, base[:, 0])
            i1w, i1wx, i1wy = warped[:, 0:1], warped[:, 1:2], warped[:, 2:3]
            grad = i1wx * i1wx + i1wy * i1wy
            rho_c = i1w - i1wx * u[:, 0:1] - i1wy * u[:, 1:2] - i0
            # the pairs still iterating, compacted every check_every iterations so that pairs that
            # converged early stop costing work; their state is written back when they leave
            state, data = [u, *dual], [i1wx, i1wy, grad, rho_c]
            rows = torch.arange(b, device=i0.device)
            sub, sub_data = list(state), list(data)
            active = torch.ones(b, 1, 1, 1, dtype=torch.bool, device=i0.device)
            for _ in range(p.outer_iterations):
                if p.median_filtering > 1:
                    sub[0] = torch.where(active, self.median(sub[0], p.median_filtering), sub[0])
                for n in range(p.inner_iterations):
                    *sub, error = self.iteration(*sub, *sub_data, active, l_t, p.theta, taut)
                    active = active & (error > scaled_epsilon).view(-1, 1, 1, 1)
                    if (n + 1) % self.check_every == 0:
                        keep = active.view(-1)
                        if not bool(keep.all()):
                            for full, part in zip(state, sub):
                                full[rows] = part
                            rows, active = rows[keep], active[keep]
                            sub, sub_data = [t[keep] for t in sub], [t[keep] for t in sub_data]
                        if not len(rows):
                            break
                if not len(rows):
                    break
            for full, part in zip(state, sub):
                full[rows] = part
            u, dual = state[0], state[1:]
        return u
