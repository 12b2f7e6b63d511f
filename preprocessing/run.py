"""Preprocess videos into clip dirs: `python -m preprocessing.run <input> <train|test|reference> [key=value]`.

Modes (as in NED): `train` does everything and fits the dataset's expression basis on the train split;
`test` does everything needed to edit a video later, reusing a train set's basis (`basis_file=`);
`reference` does tracking and face-model parameters only. Finished clips are skipped, partial ones redone.
Work is spread over `num_workers` processes and, under torchrun (or with shard_index/num_shards), over
ranks. Exits non-zero only when the command is wrong or no clip could be processed.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from omegaconf import MISSING
from tqdm import tqdm

from common.cli import parse_cli
from common.config import arg, choice, config_hash
from common.distributed import barrier, init_distributed
from common.errors import UserError, cli_entry
from common.formats import (
    CLIPS_FILE,
    TRACK_FILE,
    TRACK_SPEC,
    Clip,
    is_done,
    read_arrays,
    read_clip_index,
    write_clip_index,
)
from DECA.assets import data_dir, require
from facemodel import BACKENDS, basis_filename, read_model_file
from facemodel.deca import EXPR_DIM, save_stats
from facemodel.geometry import aligned_points
from facemodel.mesh import FIT_VERSION, fit_basis
from facemodel.topology import mediapipe_triangles
from preprocessing.clip_pass import FRAME_PROGRESS, ClipResult, fit_clip, init_face_worker, track_clip
from preprocessing.fan import check_fan
from preprocessing.fsgan_seg import DEFAULT_WEIGHTS, missing_weights_message
from preprocessing.mediapipe_mesh import quiet_native_stderr
from preprocessing.mtcnn import load_nets
from preprocessing.pairs import PAIRS_FILE, ClipRef, align_pairs, find_pairs, save_pairs
from preprocessing.sources import Source, discover

MODES = ("train", "test", "reference")


@dataclass
class PreprocessConfig:
    input: str = arg(help="MEAD-layout root, folder of videos, or one video")
    name: str = arg("", "one video: the name of its clip dir (default: the file name without extension)")
    mode: str = choice(MISSING, MODES, "train: fit the face model; test: use basis_file; reference: track + fit only")
    out_dir: str = ""  # default: data/processed/<input name>
    crop_size: int = 256
    margin: float = 0.3  # crop box = landmark box enlarged by this fraction on each side
    smooth_sigma: float = 1.5  # frames; zero-phase Gaussian on boxes and alignment
    max_faces: int = 2
    min_tracked_fraction: float = 0.5
    min_frames: int = 10  # one manipulator window
    min_fps: float = 10.0
    max_fps: float = 120.0
    detector: str = choice("mediapipe", ["mediapipe", "mtcnn"], "mtcnn = NED's detector picks the subject")
    mtcnn_weights: str = ""  # folder with pnet.pt, rnet.pt, onet.pt (default: the facenet-pytorch package's)
    landmarks: str = choice(
        "mediapipe",
        ["mediapipe", "fan", "truth"],
        "fan: also FAN's 68 points (landmarks68, DECA's crop); truth: toy MEAD only, the generator's true points "
        "replace FaceMesh's x, y (FaceMesh reads brows and lids at 0.2-0.6 of their motion: docs/toy_mead.md)",
    )
    face_model: str = choice("mesh", BACKENDS, "mesh (embedded) or deca (needs the licensed DECA/FLAME files)")
    deca_data: str = ""  # folder with the DECA/FLAME files (default DECA/data or $SPFEM_DECA_DATA)
    face_device: str = "cpu"  # where DECA runs (cpu, cuda)
    segmentation: str = choice("hull", ["hull", "fsgan"], "hull = landmark hull (embedded); fsgan = FSGAN UNet")
    segmentation_weights: str = ""  # default preprocessing/segmentation/lfw_figaro_unet_256_2_0_segmentation_v1.pth
    expr_dim: int = 51
    basis_file: str = ""  # default: <out_dir>/face_model_<backend>.npz (test/reference: the train set's)
    protocol: str = arg(
        "",
        "split protocol for a MEAD-layout root (configs/protocols: scmcl, eat, sentence); "
        "default: toy MEAD's dataset.json, else everything is train",
    )
    pairs: str = choice("same_number", ["same_number", "json"])
    pairs_file: str = ""
    num_workers: int = 2
    shard_index: int = 0
    num_shards: int = 1
    preview: bool = arg(False, "write preview.png per clip")
    preview_frames: int = 4


TRACK_KEYS = (
    "crop_size",
    "margin",
    "smooth_sigma",
    "max_faces",
    "min_tracked_fraction",
    "min_frames",
    "min_fps",
    "max_fps",
    "segmentation",
)


class Run:
    def __init__(self, cfg, input_path: str, mode: str):
        self.cfg = cfg
        self.plain = {k: getattr(cfg, k) for k in PreprocessConfig.__dataclass_fields__}
        self.mode = mode
        self.out = Path(cfg.out_dir or f"data/processed/{Path(input_path).resolve().stem}")
        self.sources = discover(input_path, cfg.name, cfg.protocol)
        self.dist = init_distributed("cpu")
        if self.dist.distributed:
            self.rank, self.world = self.dist.rank, self.dist.world_size
        else:
            if not 0 <= cfg.shard_index < cfg.num_shards:
                raise UserError(f"shard_index={cfg.shard_index} must be in [0, num_shards={cfg.num_shards})")
            self.rank, self.world = cfg.shard_index, cfg.num_shards
        self.mine = self.sources[self.rank :: self.world]
        tracked_with = {k: self.plain[k] for k in TRACK_KEYS} | {"mode": mode}
        if cfg.segmentation == "fsgan":
            tracked_with["segmentation_weights"] = cfg.segmentation_weights
        if cfg.detector != "mediapipe":  # only non-default options enter the hash (older datasets stay valid)
            tracked_with |= {"detector": cfg.detector, "mtcnn_weights": cfg.mtcnn_weights}
        if cfg.landmarks != "mediapipe":
            tracked_with["landmarks"] = cfg.landmarks
        self.track_hash = config_hash(tracked_with)
        self.basis_path = Path(cfg.basis_file) if cfg.basis_file else self.out / basis_filename(cfg.face_model)
        if cfg.landmarks == "fan":
            check_fan()
        if cfg.detector == "mtcnn":
            load_nets(cfg.mtcnn_weights or None)  # a clear message now rather than in every worker
        if cfg.segmentation == "fsgan":
            weights = Path(cfg.segmentation_weights or DEFAULT_WEIGHTS)
            if not weights.is_file():
                raise UserError(missing_weights_message(weights))
        if cfg.face_model == "deca":  # fail before any work when the licensed files are missing
            self.deca_data = data_dir(cfg.deca_data).resolve()
            require(self.deca_data)
        self.results: dict[str, list[ClipResult]] = {"track": [], "face": []}
        self.counts: dict[str, int] = {}
        self.t0 = time.time()

    def say(self, msg: str) -> None:
        if self.rank == 0 or not self.dist.distributed:
            print(msg, flush=True)

    def map(
        self, fn: Callable, jobs: list[tuple], desc: str, init=None, initargs=(), quiet_workers: bool = False
    ) -> list[ClipResult]:
        """Run fn(*job) over jobs in `num_workers` processes (inline for one), with a progress bar.

        `quiet_workers` drops native (MediaPipe) stderr chatter in worker processes; this process is untouched.
        """
        if not jobs:
            return []
        bar = tqdm(total=len(jobs), desc=desc, unit="clip", mininterval=1 if sys.stderr.isatty() else 15)
        out = []
        if self.cfg.num_workers <= 1 or len(jobs) == 1:
            if init is not None:
                init(*initargs)
            FRAME_PROGRESS["on"] = len(jobs) == 1  # one video: show its frames
            try:
                for job in jobs:
                    out.append(fn(*job))
                    bar.update(1)
            finally:
                FRAME_PROGRESS["on"] = False
        else:
            ctx = mp.get_context("spawn")
            workers = min(self.cfg.num_workers, len(jobs))
            with ctx.Pool(workers, initializer=_worker_init, initargs=(quiet_workers, init, initargs)) as pool:
                for result in pool.imap_unordered(_call, [(fn, job) for job in jobs]):
                    out.append(result)
                    bar.update(1)
        bar.close()
        return out

    # -- passes --------------------------------------------------------------------------------------

    def track_pass(self) -> None:
        jobs = [(s, str(self.out), self.plain, self.mode, self.track_hash) for s in self.mine]
        self.results["track"] = self.map(track_clip, jobs, "track", quiet_workers=True)

    def tracked(self, sources: Iterable[Source]) -> list[Source]:
        return [s for s in sources if is_done(self.out / s.rel_dir, "track", self.track_hash)]

    def basis_ready(self) -> bool:
        """Train mode: fit (or reuse) the basis on the train split once every train clip is tracked."""
        if self.mode != "train":
            return True
        train = [s for s in self.sources if s.split == "train"]
        pending = [s for s in train if not (self.out / s.rel_dir / TRACK_FILE).is_file()]
        failed = {r.rel_dir for r in self.results["track"] if r.status == "failed"}
        if any(s.rel_dir not in failed for s in pending):
            self.say("face model: waiting for other shards to finish tracking; rerun without shard_* to finish")
            return False
        usable = self.tracked(train)
        if not usable:
            reasons = "; ".join(f"{r.rel_dir}: {r.reason}" for r in self.results["track"] if r.status == "failed")
            raise UserError(
                "no train-split clip could be tracked; nothing to fit the face model on"
                + (f" ({reasons})" if reasons else "")
            )
        if self.cfg.face_model == "deca":
            return self._deca_file_ready()
        basis_hash = config_hash(
            {
                "clips": [s.rel_dir for s in usable],
                "track": self.track_hash,
                "expr_dim": self.cfg.expr_dim,
                "fit": FIT_VERSION,
            }
        )
        if self.rank == 0 and not self._basis_current(basis_hash):
            if self.cfg.basis_file and self.basis_path.is_file():  # someone else's basis: never overwrite it
                raise UserError(
                    f"basis_file={self.cfg.basis_file} exists and was fitted on other clips (or by an older fit, "
                    f"facemodel.mesh.FIT_VERSION {FIT_VERSION}); train mode fits this "
                    f"dataset's own face model: drop basis_file= (default {self.out / basis_filename('mesh')}) "
                    "or give a path that does not exist yet"
                )
            clips = [aligned_points(self._track_arrays(s)) for s in usable]
            t = time.time()
            basis = fit_basis(
                clips, [s.actor or s.rel_dir for s in usable], mediapipe_triangles(), self.cfg.expr_dim, basis_hash
            )
            basis.save(self.basis_path)
            self.say(f"face model: fitted on {len(usable)} train clips in {time.time() - t:.1f} s -> {self.basis_path}")
        barrier(self.dist)
        return True

    def _deca_hash(self) -> str:
        return config_hash({"backend": "deca", "deca_data": str(self.deca_data), "track": self.track_hash})

    def _deca_file_ready(self) -> bool:
        """DECA needs no fitting on the dataset; its file starts with identity statistics (set after the fits)."""

        if self.rank == 0 and not self._basis_current(self._deca_hash()):
            save_stats(self.basis_path, np.zeros(EXPR_DIM), np.ones(EXPR_DIM), self._deca_hash(), str(self.deca_data))
        barrier(self.dist)
        return True

    def _deca_stats(self, complete: list[Source]) -> None:
        """Train mode: expression mean and per-channel std over the fitted train clips, into the DECA file."""

        exprs = [Clip(self.out / s.rel_dir).face()["expr"] for s in complete if s.split == "train"]
        if not exprs:
            return
        x = np.concatenate(exprs).astype(np.float64)
        save_stats(self.basis_path, x.mean(0), np.maximum(x.std(0), 1e-3), self._deca_hash(), str(self.deca_data))
        self.say(f"face model: DECA expression statistics over {len(x)} train frames -> {self.basis_path}")

    def _stored_basis_hash(self) -> str | None:
        """The config hash the face-model file was fitted with (None when there is no file)."""
        if not self.basis_path.is_file():
            return None
        return read_model_file(self.basis_path)["config_hash"]

    def _basis_current(self, basis_hash: str) -> bool:
        return self._stored_basis_hash() == basis_hash

    def _track_arrays(self, src: Source):
        clip = Clip(self.out / src.rel_dir)
        return read_arrays(clip.dir / TRACK_FILE, TRACK_SPEC, clip.n_frames)

    def face_pass(self) -> None:
        if not self.basis_path.is_file():
            raise UserError(
                f"{self.basis_path}: no face model; run mode train on the training set first, or set "
                "basis_file=<train out_dir>/" + basis_filename(self.cfg.face_model)
            )
        face_hash = config_hash({"basis": self._stored_basis_hash(), "track": self.track_hash})
        preview = self.cfg.preview_frames if self.cfg.preview else 0
        jobs = [(s.rel_dir, str(self.out), face_hash, self.cfg.face_model, preview) for s in self.tracked(self.mine)]
        init_args = (self.cfg.face_model, str(self.basis_path), self.cfg.face_device)
        self.results["face"] = self.map(fit_clip, jobs, "face model", init=init_face_worker, initargs=init_args)

    def complete(self) -> list[Source]:
        stage = "face"
        return [s for s in self.sources if is_done(self.out / s.rel_dir, stage)]

    def dataset_steps(self) -> None:
        """Pairs + DTW (train mode, MEAD-style data) and the clip index, once all shards are done."""
        barrier(self.dist)
        if self.rank != 0 and self.dist.distributed:
            return
        complete = self.complete()
        failed = [r for r in self.results["track"] if r.status == "failed"]
        if len(complete) + len(failed) < len(self.sources) and self.world > 1 and not self.dist.distributed:
            self.say("index: other shards still running; the last shard (or an unsharded rerun) writes it")
            return
        if self.mode == "train" and self.cfg.face_model == "deca":
            self._deca_stats(complete)
        refs = [ClipRef(s.rel_dir, s.actor, s.emotion, s.clip_id) for s in complete if s.actor and s.emotion]
        if self.mode == "train" and refs:
            pairs = find_pairs(refs, self.cfg.pairs, self.cfg.pairs_file)
            if pairs:
                t = time.time()
                with tqdm(total=len(pairs), desc="DTW pairs", unit="pair", mininterval=15) as bar:
                    arrays = align_pairs(self.out, pairs, bar)
                save_pairs(self.out / PAIRS_FILE, arrays)
                self.say(f"pairs: {len(pairs)} same-sentence pairs aligned in {time.time() - t:.1f} s")
        clips = [
            {**asdict(s), "video": str(s.video), "audio": str(s.audio) if s.audio else None, "dir": s.rel_dir}
            for s in complete
        ]
        basis = str(self.basis_path.resolve())
        write_clip_index(self.out, self.mode, self.cfg.face_model, basis, clips + self._other_clips(clips, basis))

    def _other_clips(self, clips: list[dict], basis: str) -> list[dict]:
        """test/reference mode: the finished clips an earlier run (other videos, same face model) put in the
        same out_dir stay listed, so a folder that collects videos one at a time keeps an index of all."""
        if self.mode == "train" or not (self.out / CLIPS_FILE).is_file():
            return []
        old = read_clip_index(self.out)
        if (old["mode"], old["face_model"], old["basis_file"]) != (self.mode, self.cfg.face_model, basis):
            return []
        mine = {c["dir"] for c in clips}
        return [c for c in old["clips"] if c["dir"] not in mine and is_done(self.out / c["dir"], "face")]

    def summary(self) -> None:
        """Processed / skipped / failed per pass, throughput and the per-step time breakdown."""
        elapsed = time.time() - self.t0
        lines = [f"preprocess {self.mode}: {len(self.mine)} clip(s) -> {self.out}"]
        steps: dict[str, float] = {}
        for name, results in self.results.items():
            counts = {k: sum(r.status == k for r in results) for k in ("done", "skipped", "failed")}
            lines.append(
                f"  {name:<6} processed {counts['done']}, skipped {counts['skipped']}, failed {counts['failed']}"
            )
            for r in results:
                for k, v in r.seconds.items():
                    steps[k] = steps.get(k, 0.0) + v
        frames = sum(r.n_frames for r in self.results["track"] if r.status == "done")
        lines.append(f"  {frames} newly tracked frames in {elapsed:.1f} s ({frames / max(elapsed, 1e-9):.1f} frames/s)")
        if frames:
            per_step = ", ".join(f"{k} {1000 * v / frames:.2f}" for k, v in steps.items())
            lines.append(f"  per step (worker time, ms per frame): {per_step}")
        for r in self.results["track"] + self.results["face"]:
            if r.status == "failed":
                lines.append(f"  FAILED {r.rel_dir}: {r.reason}")
        print("\n".join(lines), flush=True)
        ok = [r for r in self.results["track"] if r.status != "failed"]
        self.counts = {"ok": len(ok), "failed": len(self.results["track"]) - len(ok)}


def _worker_init(quiet: bool, init, initargs) -> None:
    if quiet:
        quiet_native_stderr()
    if init is not None:
        init(*initargs)


def _call(fn_job):
    fn, job = fn_job
    return fn(*job)


def run(cfg, input_path: str, mode: str) -> Run:
    job = Run(cfg, input_path, mode)
    job.track_pass()
    if job.basis_ready():
        job.face_pass()
        job.dataset_steps()
    job.summary()
    return job


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(
        PreprocessConfig, argv, prog="python -m preprocessing.run", doc=__doc__, positional=["input", "mode"]
    )
    job = run(cfg, cfg.input, cfg.mode)
    if job.counts["ok"] == 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
