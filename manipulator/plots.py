"""TensorBoard figures of the manipulator: a validation window edited to every emotion, the mouth-opening
channel and two expression coefficients over time, source vs edited."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from common.emotions import ANGRY, HAPPY, NEUTRAL, SAD, SURPRISED
from common.engine import eval_mode
from common.formats import MOUTH_CHANNEL, Clip
from common.video import write_video
from facemodel.render import render_mesh
from manipulator.data import WindowBank
from manipulator.editing import label_style


@torch.no_grad()
def edit_plot(
    nets: dict[str, torch.nn.Module], bank: WindowBank, latent_dim: int, channels=(MOUTH_CHANNEL, 1, 2)
) -> np.ndarray:
    """(H, W, 3) uint8 image: one row per channel, one column per target emotion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with eval_mode(nets.values()):
        neutral = bank.emotions.index(NEUTRAL) if NEUTRAL in bank.emotions else 0
        candidates = bank.by_label[neutral] if len(bank.by_label[neutral]) else np.arange(len(bank))
        window = bank.windows(candidates[len(candidates) // 2 : len(candidates) // 2 + 1])
        fig, axes = plt.subplots(
            len(channels), len(bank.emotions), figsize=(2.2 * len(bank.emotions), 1.6 * len(channels)), squeeze=False
        )
        for col, emotion in enumerate(bank.emotions):
            style = torch.from_numpy(label_style(nets["mapping"], col, latent_dim))[None]
            edited = nets["generator"](window, style)[0].numpy()
            for row, c in enumerate(channels):
                ax = axes[row, col]
                ax.plot(window[0, :, c].numpy(), color="0.5", label="source")
                ax.plot(edited[:, c], color="C3", label="edited")
                ax.set_xticks([])
                if row == 0:
                    ax.set_title(emotion, fontsize=8)
                if col == 0:
                    ax.set_ylabel("mouth" if c == MOUTH_CHANNEL else f"expr {c}", fontsize=8)
        axes[0, 0].legend(fontsize=6)
        fig.tight_layout()
        fig.canvas.draw()
        image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        plt.close(fig)
        return image


SAMPLE_EMOTIONS = (HAPPY, ANGRY, SAD, SURPRISED)  # the columns of a training sample video, after the source


def sample_video(editor, model, clip: Clip, out: Path, tile: int = 160) -> Path | None:
    """An mp4 with the clip's audio: its face model's mesh (shaded) as tracked, then edited by `editor` to each of
    SAMPLE_EMOTIONS it knows, side by side and labelled, frame by frame; what a training run shows every
    `sample_every` steps (`<run>/samples/`). None when the editor knows none of those emotions."""
    face = clip.face()
    emotions = [e for e in SAMPLE_EMOTIONS if e in editor.emotions]
    if not emotions:
        return None
    exprs = [face["expr"]] + [editor.edit(face["expr"], editor.target_style(e), edit_from="none") for e in emotions]
    meshes = [model.decode(face | {"expr": expr.astype(np.float32)}) for expr in exprs]
    scale = tile / clip.meta.crop_size

    def frames():
        for t in range(clip.n_frames):
            tiles = []
            for label, verts in zip(["source", *emotions], meshes, strict=True):
                shaded = render_mesh(verts[t] * [scale, scale, scale], model.triangles, model.nmfc_colors, tile).shape
                image = np.ascontiguousarray((shaded * 255).astype(np.uint8))
                cv2.putText(image, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
                tiles.append(image)
            yield np.concatenate(tiles, axis=1)

    out.parent.mkdir(parents=True, exist_ok=True)
    write_video(out, frames(), clip.meta.fps, clip.audio())
    return out
