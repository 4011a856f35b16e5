"""torch.hub entry points: ``torch.hub.load(REPO, 'two_stream', spatial=..., motion=...)``.

REPO is a GitHub ``owner/name`` (online) or this folder with ``source='local'``; spatial and
motion are checkpoints written by spatial_cnn.py/motion_cnn.py (best published with
tools/publish_model.py), as local paths or https URLs (cached by torch.hub, their sha256
checked against the hash in their names). Either stream alone works.
"""
dependencies = ["torch", "torchvision", "numpy", "PIL", "cv2"]


def two_stream(spatial: str | None = None, motion: str | None = None, device: str = "cpu", **options):
    """A ready predictor (predict.py's): ``predictor("video.mp4")`` returns its record: fused and
    per-stream top-k with probabilities; ``options`` are predict.py's flags by name (e.g.
    ``weights=[1, 1.5]``, ``window=2.0``)."""
    from inference.predictor import Predictor

    return Predictor(spatial=spatial, motion=motion, device=device, **options)
