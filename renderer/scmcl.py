"""SCMCL at image level: the later SCMCL code's renderer fine-tuning terms (on with `scmcl.enabled`).

For a source window of the identity (source emotion, default neutral) the retrieval index gives a
same-speech window in a target emotion and their audio distance d_a (anchor = the window's last frame).
The index must have been built by `metric_run` itself (its audio encoder; refused otherwise), so that d_a
and φ(d_img) are on one scale.
The source clip is edited to that emotion with the trained manipulator, and the anchor frame is rendered
from the edited parameters. Then:
- correlation: |φ(d_img(source frame, rendered frame)) - d_a|, d_img = L2 between the frozen metric image
  encoder's embeddings of the mouth crops, φ the metric's calibrated scale for the image modality;
- paired: the rendered frame against the retrieved real target-emotion frame, weighted by 1/(1 + d_a):
  VGG19 perceptual when its weights are present, else L1 on the face region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from common.emotions import NEUTRAL
from common.errors import UserError
from common.formats import Clip
from manipulator.edit import Editor  # the trained manipulator, frozen
from manipulator.metric.data import crop_box
from manipulator.metric.index import RetrievalIndex, default_index_dir
from manipulator.metric.models import load_metric
from renderer.conditioning import ClipConditioner


@dataclass
class RendererScmclConfig:
    enabled: bool = False
    metric_run: str = "runs/metric/joint_visual"  # a metric run with the image encoder ("visual") and its φ
    manipulator_run: str = "runs/manipulator/scmcl"  # edits the source clips to the target emotions
    index_dir: str = ""  # default <data_dir>/retrieval/<metric run name>: built by metric_run (checked)
    source_emotion: str = NEUTRAL
    batch_size: int = 2
    lambda_corr: float = 1.0
    lambda_paired: float = 1.0


class ScmclImageTerms:
    def __init__(self, cfg, engine, data):

        sc = cfg.scmcl
        self.cfg, self.data, self.device = cfg, data, engine.device
        self.n_g = cfg.n_frames_g
        nets, mcfg = load_metric(sc.metric_run, ["visual", "phi_visual"], self.device)
        self.f_img, self.phi = nets["visual"], nets["phi_visual"]
        self.crop_kind, self.visual_size = mcfg["inputs"]["visual_crop"], int(mcfg["inputs"]["visual_size"])
        self.editor = Editor.load(sc.manipulator_run)
        # d_a must come from the same metric run as the image encoder and φ (one distance scale)
        self.index = RetrievalIndex(sc.index_dir or default_index_dir(cfg.data_dir, sc.metric_run))
        self.index.check_metric(sc.metric_run)
        self.seq_len = int(self.index.settings["seq_len_frames"])
        self.by_dir = {d: i for i, d in enumerate(data.dirs)}
        self.source_emotion = sc.source_emotion
        self.targets = []
        for emotion in self.editor.emotions:
            if emotion == sc.source_emotion:
                continue
            try:
                self.index.candidates(cfg.actor, sc.source_emotion, emotion)
                self.targets.append(emotion)
            except UserError:
                continue
        if not self.targets:
            raise UserError(f"{self.index.dir}: no {sc.source_emotion} -> emotion candidates for actor {cfg.actor}")
        src = self.index.windows(cfg.actor, sc.source_emotion)
        ok = [r for r, c in enumerate(src["clip"]) if self.index.clips[c] in self.by_dir]
        if not ok:
            raise UserError(f"no {sc.source_emotion} windows of {cfg.actor} among the renderer's training clips")
        self.source_rows = np.array(ok)
        self._edited: dict[tuple[int, str], ClipConditioner] = {}  # edited (clip, emotion) and real (-1, dir)

    def _edited_conditioner(self, c: int, emotion: str) -> ClipConditioner:
        key = (c, emotion)
        if key not in self._edited:
            clip = Clip(self.data.root / self.data.dirs[c])
            face = clip.face()
            face["expr"] = self.editor.edit(face["expr"], self.editor.target_style(emotion), edit_from="none")
            self._edited[key] = ClipConditioner(self.data.model, clip, self.data.size, face=face)
        return self._edited[key]

    def _real_conditioner(self, rel_dir: str) -> ClipConditioner:
        key = (-1, rel_dir)
        if key not in self._edited:
            self._edited[key] = ClipConditioner(self.data.model, Clip(self.data.root / rel_dir), self.data.size)
        return self._edited[key]

    def _embed(self, img: torch.Tensor) -> torch.Tensor:
        """Image-encoder embeddings of the mouth (or face) crops of (N, 3, S, S) images in [-1, 1]."""
        x0, y0, x1, y1 = crop_box(img.shape[-1], self.crop_kind)
        crop = (img[:, :, y0:y1, x0:x1].float() + 1) / 2
        return self.f_img(F.interpolate(crop, size=(self.visual_size,) * 2, mode="area"))

    def sample(self, rng: np.random.Generator):
        """Source anchors, edited conditioning, retrieved real frames and audio distances for one batch."""
        actor = self.cfg.actor
        src = self.index.windows(actor, self.source_emotion)
        conds, masks, sources, targets, dists = [], [], [], [], []
        tries = 0
        while len(conds) < self.cfg.scmcl.batch_size:
            tries += 1
            if tries > 50 * self.cfg.scmcl.batch_size:
                raise UserError("SCMCL: no retrieved pairs with finite distance among the renderer's clips")
            row = int(rng.choice(self.source_rows))
            emotion = self.targets[int(rng.integers(len(self.targets)))]
            idx, dist = self.index.candidates(actor, self.source_emotion, emotion)
            ok = np.nonzero(idx[row] >= 0)[0]
            if not len(ok):
                continue
            k = int(rng.choice(ok))
            trg = self.index.windows(actor, emotion)
            t_row = int(idx[row, k])
            c = self.by_dir[self.index.clips[src["clip"][row]]]
            t = int(src["anchor"][row])
            ec = self._edited_conditioner(c, emotion)
            conds.append(ec.render_range(range(t - self.n_g + 1, t + 1)).reshape(-1, self.data.size, self.data.size))
            m = ec.mask(t)
            masks.append(m)
            sources.append(ec.face(t) * m - (1 - m))
            tc = self._real_conditioner(self.index.clips[trg["clip"][t_row]])
            tt = int(trg["anchor"][t_row])
            tm = tc.mask(tt)
            targets.append(tc.face(tt) * tm - (1 - tm))
            dists.append(float(dist[row, k]))
        to = lambda xs: torch.from_numpy(np.stack(xs).astype(np.float32)).to(self.device)  # noqa: E731
        return to(conds), to(masks), to(sources), to(targets), to(dists)

    def __call__(self, generator, rng: np.random.Generator, perceptual=None) -> tuple[torch.Tensor, dict[str, float]]:
        sc = self.cfg.scmcl
        cond, mask, source, target, d_a = self.sample(rng)
        prev = torch.zeros(len(cond), 3 * (self.n_g - 1), *cond.shape[-2:], device=cond.device)
        rendered = generator(cond, prev, mask)
        with torch.no_grad():
            e_src = self._embed(source)
        d_img = torch.linalg.vector_norm(self._embed(rendered) - e_src, dim=1)
        corr = (self.phi(d_img) - d_a).abs().mean()
        w = 1.0 / (1.0 + d_a)
        if perceptual is not None:
            per = torch.stack([perceptual(rendered[i : i + 1], target[i : i + 1]) for i in range(len(rendered))])
        else:
            per = (rendered.float() - target).abs().mul(mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
        paired = (w * per).mean()
        loss = sc.lambda_corr * corr + sc.lambda_paired * paired
        return loss, {"scmcl/corr": corr.item(), "scmcl/paired": paired.item(), "scmcl/d_img": d_img.mean().item()}
