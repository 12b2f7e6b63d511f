"""A local web page for the one command: `make app`, or

  python -m webapp.app [--port 7860] [--host 127.0.0.1] [--max-seconds 60] [--runs-root runs]

Upload a video (or pick a sample: a built-in portrait animated into a talking clip), choose the emotion, its
intensity and the renderer, or type a timeline ("0:neutral,2:happy"), and get the edited video with its audio,
the side-by-side, and the judge's reading of the result (the FER2013 judge, `evaluation.fer`: P(target) on
the source and on the edit). It runs `postprocessing.pipeline` exactly as `scripts/postprocess.sh` does, with
the same choice of manipulator (your trained run, else the bundled model) and the same checks.

Jobs run one at a time (a second waits in the queue); a video longer than `--max-seconds`, a file that is no
video and a video without a face get one clear message on the page. Each job works in its own folder under a
temporary directory that is removed when the app stops (the two latest jobs are kept while it runs, so their
videos stay downloadable). Nothing leaves the machine: the page is served on 127.0.0.1 by default, no
analytics, no share link.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from common.cli import parse_cli
from common.config import arg
from common.emotions import DEFAULT_EMOTIONS, HAPPY, NEUTRAL
from common.errors import UserError, cli_entry
from common.video import probe_video
from evaluation.fer import FERJudge, mean_probability, top_share
from evaluation.panel import judge_video, stamped_clip
from postprocessing.pipeline import edit_video_file, resolve_runs_root
from preprocessing.toy_mead.portrait import BUILTIN_PORTRAITS
from renderer.registry import default_renderer
from renderer.warp import WarpRenderer

SAMPLE_SIZE = 384  # a sample clip's frame size (square)
KEEP_JOBS = 2  # finished job folders kept while the app runs (their videos are being shown)


@dataclass
class AppConfig:
    host: str = arg("127.0.0.1", "address to serve on (127.0.0.1: this machine only)")
    port: int = arg(7860, "port")
    max_seconds: float = arg(60.0, "longest video accepted, in seconds")
    runs_root: str = arg("", "the pipeline's --runs-root (default: as scripts/postprocess.sh)")
    manipulator: str = arg("", "the pipeline's --manipulator (default: your trained run, else the bundled model)")
    work_dir: str = arg("", "where jobs work (default: a temporary folder removed at exit)")


class Jobs:
    """Job folders under one work dir: a new one per edit, the oldest removed beyond KEEP_JOBS."""

    def __init__(self, root: Path):
        self.root = root
        self.count = 0
        self.lock = threading.Lock()

    def new(self) -> Path:
        with self.lock:
            self.count += 1
            folder = self.root / f"job_{self.count:04d}"
            folder.mkdir(parents=True)
            for old in sorted(self.root.glob("job_*"))[:-KEEP_JOBS]:
                shutil.rmtree(old, ignore_errors=True)
            return folder


def check_video(path: Path, max_seconds: float) -> float:
    """The video's duration; a clear UserError for a file that is no video or one that is too long."""
    try:
        info = probe_video(path)
    except UserError as exc:
        raise UserError(f"{path.name} is not a video this tool can read ({exc})") from None
    seconds = float(info.n_frames / info.fps)
    if seconds > max_seconds:
        raise UserError(
            f"{path.name} is {seconds:.0f} s long; this page edits videos up to {max_seconds:.0f} s "
            "(scripts/postprocess.sh has no limit, or start the app with --max-seconds)"
        )
    return seconds


@functools.cache
def the_judge() -> FERJudge:
    """The judge, loaded once for every job."""
    return FERJudge.load()


def judge_line(source: Path, edited: Path, emotion: str) -> str:
    """The FER2013 judge's reading of the source and the edit for `emotion` (every 2nd frame)."""
    src, out = (judge_video(the_judge(), path, 2) for path in (source, edited))
    return (
        f"Judge (FER2013, its own face crop), P({emotion}): {mean_probability(src, emotion):.2f} on the source → "
        f"**{mean_probability(out, emotion):.2f}** on the edit; {emotion} is the top class on "
        f"{100 * top_share(src, emotion):.0f} % → **{100 * top_share(out, emotion):.0f} %** of the frames."
    )


def renderer_choices(cfg: AppConfig) -> list[str]:
    """The runs root's default renderer first (warp_refine when the generic refiner is trained, else warp), the
    other of the two, and each neural renderer run of the runs root."""
    root = Path(resolve_runs_root(cfg))
    first = default_renderer(root)
    choices = [first] + ([WarpRenderer.kind] if first != WarpRenderer.kind else [])
    renderers = root / "renderer"
    if renderers.is_dir():
        choices += [str(p) for p in sorted(renderers.iterdir()) if (p / "checkpoints").is_dir()]
    return choices


def sample_clip(face: str, folder: Path) -> Path:
    """A talking clip of a built-in portrait (made once, then reused while the toy rig that draws it is the
    same)."""
    clip = folder / f"{face}.mp4"
    stamped_clip(face, clip, SAMPLE_SIZE, 25.0)
    return clip


def edit(
    cfg: AppConfig,
    jobs: Jobs,
    video: str | None,
    sample: str,
    emotion: str,
    intensity: float,
    renderer: str,
    timeline: str,
) -> tuple[str, str, str, str]:
    """One job: (side-by-side mp4, edited mp4, the judge's line, what was used)."""
    if not video and not sample:
        raise UserError("upload a video or pick a sample first")
    source = Path(video) if video else sample_clip(sample, jobs.root / "samples")
    check_video(source, cfg.max_seconds)
    folder = jobs.new()
    out = folder / "edited.mp4"
    paths = edit_video_file(
        source,
        "" if timeline.strip() else emotion,
        timeline=timeline.strip(),
        intensity=intensity,
        out=out,
        side_by_side=True,
        renderer=renderer,
        processed_dir=str(folder / "processed"),
        clip_name="input",
        runs_root=cfg.runs_root,
        manipulator=cfg.manipulator,
    )
    judged = judge_line(source, paths["video"], emotion) if not timeline.strip() else "(no judge line for a timeline)"
    used = f"{source.name} → {timeline.strip() or emotion} at intensity {intensity:g}, renderer {renderer}"
    return str(paths["side_by_side"]), str(paths["video"]), judged, used


def build(cfg: AppConfig, jobs: Jobs):
    """The page (gradio Blocks)."""
    emotions = [e for e in DEFAULT_EMOTIONS if e != NEUTRAL]
    renderers = renderer_choices(cfg)

    def run(video, sample, emotion, intensity, renderer, timeline, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        progress(0, desc="starting")
        try:
            return edit(cfg, jobs, video, sample, emotion, intensity, renderer, timeline)
        except UserError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:  # a bug: its line on the page, its traceback in the app's console
            traceback.print_exc()
            raise gr.Error(f"the edit failed: {type(exc).__name__}: {exc} (traceback in the app's console)") from None

    with gr.Blocks(title="SPFEM: edit the emotion of a talking video", analytics_enabled=False) as page:
        gr.Markdown(
            "# Edit the emotion of a talking video\n"
            "The lips keep saying what they said. Upload a video with one face (up to "
            f"{cfg.max_seconds:.0f} s), or pick a sample; choose the emotion and press **Edit**."
        )
        with gr.Row():
            with gr.Column():
                video = gr.Video(label="Your video", sources=["upload"], elem_id="input-video", height=300)
                sample = gr.Dropdown(
                    ["", *BUILTIN_PORTRAITS],
                    value="",
                    label="…or a sample (a portrait animated into a talking clip)",
                    elem_id="sample",
                )
                emotion = gr.Dropdown(emotions, value=HAPPY, label="Emotion", elem_id="emotion")
                intensity = gr.Slider(0.0, 2.0, value=1.0, step=0.1, label="Intensity (1 = the emotion; >1 stronger)")
                renderer = gr.Dropdown(renderers, value=renderers[0], label="Renderer (warp: any face, no training)")
                timeline = gr.Textbox(
                    label='Timeline instead of one emotion, e.g. "0:neutral,2:happy,5:sad" (seconds:emotion)',
                    elem_id="timeline",
                )
                go = gr.Button("Edit", variant="primary", elem_id="edit-button")
            with gr.Column():
                side = gr.Video(label="Source | edited", elem_id="side-by-side", interactive=False, height=300)
                edited = gr.Video(
                    label="Edited video (with its audio)", elem_id="edited-video", interactive=False, height=300
                )
                judged = gr.Markdown(elem_id="judge")
                used = gr.Markdown(elem_id="used")
        go.click(run, [video, sample, emotion, intensity, renderer, timeline], [side, edited, judged, used])
    return page.queue(default_concurrency_limit=1)  # one job at a time; the others wait in the queue


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(AppConfig, argv, prog="python -m webapp.app", doc=__doc__)
    root = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="spfem_app_"))
    if not cfg.work_dir:
        atexit.register(shutil.rmtree, root, True)
    page = build(cfg, Jobs(root))
    print(f"open http://{cfg.host}:{cfg.port} (Ctrl-C stops the app; jobs work in {root})", flush=True)
    page.launch(
        server_name=cfg.host,
        server_port=cfg.port,
        share=False,
        show_error=True,
        max_file_size="500mb",
        allowed_paths=[str(root)],
        footer_links=[],
    )


if __name__ == "__main__":
    main()
