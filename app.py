"""A web page for trained two-stream checkpoints (Gradio): upload a video or use the webcam.

    python app.py --spatial CKPT --motion CKPT [--host 127.0.0.1] [--port 7860] [--share]
                  [--max-mb 200] [--max-seconds 600] [--window 2 --stride 1] [predict.py's model options]

Shows the fused top-5 with bars (and each stream's probabilities), the timeline of a video
longer than --window, the video with the current top class drawn on it (to play and download)
and predict.py's JSON record. It listens on 127.0.0.1 unless --host says otherwise and opens
no public share link unless --share is given. A file that is not a video, too long or too
large gets a message on the page; requests queue, one model is in memory.
"""
from __future__ import annotations

import argparse

from guards import bound, check_io
from inference.predictor import add_model_arguments, add_window_arguments
from utils import HelpFormatter, UserError, run_cli


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_model_arguments(p)
    add_window_arguments(p)
    p.set_defaults(window=2.0, stride=1.0)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: every interface, reachable from other machines)")
    p.add_argument("--port", type=bound("port"), default=7860, help="port to listen on")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--max-mb", type=bound("upload_mb"), default=200.0, help="the largest upload accepted, in megabytes")
    p.add_argument("--max-seconds", type=bound("seconds"), default=600.0, help="the longest video accepted, in seconds")
    p.add_argument("--title", default="Two-stream action recognition", help="the page's title")
    return p


def main(args: argparse.Namespace) -> None:
    from inference.predictor import Predictor
    from inference.web import Analyser, Limits, build_page, upload_folder

    check_io(get_args_parser(), args)
    uploads = upload_folder()
    options = {name: getattr(args, name) for name in ("weights", "topk", "size", "flow_method", "workers", "bound",
                                                      "jpeg_quality", "class_ind", "backend", "window", "stride",
                                                      "window_frames")}
    predictor = Predictor(args.spatial, args.motion, device=args.device, **options)
    work = uploads / "results"
    work.mkdir(exist_ok=True)
    analyser = Analyser(predictor, uploads, Limits(args.max_mb, args.max_seconds), work)
    page = build_page(analyser, args.title)
    page.queue(default_concurrency_limit=1)
    try:
        page.launch(server_name=args.host, server_port=args.port, share=args.share,
                    max_file_size=int(args.max_mb * 2**20), allowed_paths=[str(work)], show_error=True)
    except OSError as err:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {err}\n  fix: pass another --port") from None
    finally:
        predictor.close()


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()))
