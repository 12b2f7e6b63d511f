"""NED's renderer checkpoints (renderer.ned) on files this test writes: NED's networks are transcribed below from
foivospar/NED renderer/models/networks.py (default options, the names and module order that make its state-dict
keys, the forward passes), given random weights and saved as NED saves them (`<epoch>_net_<G|D|Dm|De>.pth`). Our
networks loaded from those files must compute what NED's compute."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import run_module, tiny_renderer_args
from torch import nn

from common.checkpoint import list_checkpoints, load_checkpoint
from common.errors import FormatError, UserError
from renderer.ned import main as ned_main
from renderer.ned import ned_epoch, ned_spec, read_ned_renderer, reference_nets, to_ours
from renderer.networks import build_renderer
from renderer.neural import NeuralRenderer
from renderer.train import main as train_main

_NORM = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=True)  # NED's get_norm_layer


class NedResnetBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv_block = self.build_conv_block(dim)

    def build_conv_block(self, dim: int) -> nn.Sequential:
        block = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3),
            _NORM(dim),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3),
            _NORM(dim),
        ]
        self.resnetblock_sequential = nn.Sequential(*block)  # registered under two names, as in NED
        return self.resnetblock_sequential

    def forward(self, x):
        return x + self.conv_block(x)


class NedGenerator(nn.Module):
    def __init__(self, input_nc=27, output_nc=3, prev_output_nc=6, ngf=64, n_down=3, n_blocks=9, n_frames_g=3):
        super().__init__()
        self.n_frames_G = n_frames_g
        act = nn.ReLU(True)
        seg = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7), _NORM(ngf), act]
        img = [nn.ReflectionPad2d(3), nn.Conv2d(prev_output_nc, ngf, 7), _NORM(ngf), act]
        for i in range(n_down):
            m = 2**i
            seg += [nn.Conv2d(ngf * m, ngf * m * 2, 3, stride=2, padding=1), _NORM(ngf * m * 2), act]
            img += [nn.Conv2d(ngf * m, ngf * m * 2, 3, stride=2, padding=1), _NORM(ngf * m * 2), act]
        m = 2**n_down
        for _ in range(n_blocks - n_blocks // 2):
            seg += [NedResnetBlock(ngf * m)]
            img += [NedResnetBlock(ngf * m)]
        res = [NedResnetBlock(ngf * m) for _ in range(n_blocks // 2)]
        up = []
        for i in range(n_down):
            m = 2 ** (n_down - i)
            up += [
                nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, stride=2, padding=1, output_padding=1),
                _NORM(ngf * m // 2),
                act,
            ]
        self.model_down_seg, self.model_down_img = nn.Sequential(*seg), nn.Sequential(*img)
        self.model_res_img, self.model_up_img = nn.Sequential(*res), nn.Sequential(*up)
        self.model_final_img = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh())

    def forward(self, input, img_prev):  # per frame: 9 conditioning channels + the mask
        mask = input[:, -1, :, :].unsqueeze(1)
        input = torch.cat([ch[:, :-1, :, :] for ch in torch.chunk(input, chunks=self.n_frames_G, dim=1)], 1)
        down = self.model_down_seg(input) + self.model_down_img(img_prev)
        img = self.model_final_img(self.model_up_img(self.model_res_img(down)))
        return img * mask - (1 - mask)


class NedNLayerDiscriminator(nn.Module):
    def __init__(self, input_nc, ndf=64, n_layers=3):
        super().__init__()
        seq = [[nn.Conv2d(input_nc, ndf, 4, stride=2, padding=2), nn.LeakyReLU(0.2, True)]]
        nf = ndf
        for _ in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512)
            seq += [[nn.Conv2d(nf_prev, nf, 4, stride=2, padding=2), _NORM(nf), nn.LeakyReLU(0.2, True)]]
        nf_prev, nf = nf, min(nf * 2, 512)
        seq += [[nn.Conv2d(nf_prev, nf, 4, stride=1, padding=2), _NORM(nf), nn.LeakyReLU(0.2, True)]]
        seq += [[nn.Conv2d(nf, 1, 4, stride=1, padding=2)]]
        for n, layers in enumerate(seq):
            setattr(self, f"model{n}", nn.Sequential(*layers))


class NedMultiscaleDiscriminator(nn.Module):
    def __init__(self, input_nc=12, ndf=64, n_layers=3, num_D=2):
        super().__init__()
        self.num_D, self.n_layers = num_D, n_layers
        for i in range(num_D):
            net = NedNLayerDiscriminator(input_nc, min(64, ndf * (2 ** (num_D - 1 - i))), n_layers)
            for j in range(n_layers + 2):
                setattr(self, f"scale{i}_layer{j}", getattr(net, f"model{j}"))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)

    def forward(self, input):
        input = torch.cat((input[:, :9], input[:, -3:]), 1)
        result, x = [], input
        for i in range(self.num_D):
            feats = [x]
            for j in range(self.n_layers + 2):
                feats.append(getattr(self, f"scale{self.num_D - 1 - i}_layer{j}")(feats[-1]))
            result.append(feats[1:])
            if i != self.num_D - 1:
                x = self.downsample(x)
        return result


def _ned_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    cond, masks = torch.rand(2, 27, 32, 32, generator=g), torch.rand(2, 3, 1, 32, 32, generator=g)
    prev = torch.rand(2, 6, 32, 32, generator=g) * 2 - 1
    ned_cond = torch.cat([torch.cat([cond[:, 9 * f : 9 * f + 9], masks[:, f]], 1) for f in range(3)], 1)
    return cond, prev, masks[:, 2], ned_cond


@pytest.fixture(scope="module")
def ned_nets(tmp_path_factory):
    """NED's four nets with random weights (running statistics updated by a training-mode forward, as in NED's
    files) saved as epoch 15 of a checkpoints dir; the discriminator of the mouth with DataParallel's prefix."""
    torch.manual_seed(0)
    nets = {
        "G": NedGenerator(),
        "D": NedMultiscaleDiscriminator(),
        "Dm": NedMultiscaleDiscriminator(),
        "De": NedMultiscaleDiscriminator(),
    }
    cond, prev, _, ned_cond = _ned_inputs(1)
    with torch.no_grad():
        nets["G"](ned_cond, prev)
        for tag in ("D", "Dm", "De"):
            nets[tag](torch.rand(2, 12, 32, 32))
    d = tmp_path_factory.mktemp("ned") / "checkpoints_meta-renderer"
    d.mkdir()
    for tag, net in nets.items():
        state = net.state_dict()
        if tag == "Dm":
            state = {f"module.{k}": v for k, v in state.items()}
        torch.save(state, d / f"15_net_{tag}.pth")
    return nets, d


def test_ned_files_load_into_our_nets(ned_nets):
    nets, d = ned_nets
    g_keys = set(torch.load(d / "15_net_G.pth", weights_only=True))  # the layout the reader must take
    assert (
        "model_down_seg.13.resnetblock_sequential.1.weight" in g_keys
        and "model_down_seg.13.conv_block.1.weight" in g_keys
    )
    assert "model_up_img.1.running_mean" in g_keys and "scale1_layer3.1.running_var" in set(nets["D"].state_dict())
    assert ned_spec(str(d)) == (d, None) and ned_spec(f"{d}@15") == (d, "15") and ned_spec(str(d.parent)) is None
    states = read_ned_renderer(d)
    ours = build_renderer("ned", 3, mouth_d=True, eyes_d=True)
    for name, net in ours.items():
        net.load_state_dict(states[name])  # strict: every key of ours is there, nothing else
        net.eval()  # ours in eval mode, NED's in training mode (NED never calls eval)
    cond, prev, mask, ned_cond = _ned_inputs()
    with torch.no_grad():
        torch.testing.assert_close(ours["generator"](cond, prev, mask), nets["G"](ned_cond, prev))
        x = torch.rand(2, 12, 32, 32)
        for tag, name in (("D", "disc_image"), ("Dm", "disc_mouth"), ("De", "disc_eyes")):
            for f_ours, f_ned in zip(ours[name](x), nets[tag](x), strict=True):
                for a, b in zip(f_ours, f_ned, strict=True):
                    torch.testing.assert_close(a, b)


def test_mismatches_are_one_line_summaries(ned_nets, tmp_path):
    nets, d = ned_nets
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "15_net_G.pth").symlink_to(d / "15_net_G.pth")
    state = nets["D"].state_dict()
    state["scale0_layer1.0.weihgt"] = state.pop("scale0_layer1.0.weight")
    torch.save(state, bad / "15_net_D.pth")
    with pytest.raises(FormatError) as exc:
        read_ned_renderer(bad, "15")
    summary = "1 missing key(s) (scale0_layer1.0.weight); 1 unexpected key(s) (scale0_layer1.0.weihgt)"
    assert str(exc.value) == f"{bad}/15_net_D.pth: not NED's renderer disc_image (D) at NED's default sizes: {summary}"
    state = nets["D"].state_dict()
    state["scale0_layer4.0.weight"] = torch.zeros(1, 64, 4, 4)  # the cap of our earlier `ned` size (ndf_max 64)
    torch.save(state, bad / "15_net_D.pth")
    with pytest.raises(
        FormatError,
        match=r"15_net_D.pth: .* 1 wrong shape\(s\) \(scale0_layer4.0.weight: "
        r"\(1, 64, 4, 4\), expected \(1, 512, 4, 4\)\)$",
    ):
        read_ned_renderer(bad)
    # the generator's ResnetBlock copies: both must agree; either alone is enough
    ref = reference_nets()["generator"]
    g = dict(nets["G"].state_dict())
    assert to_ours("generator", g, ref)[1] == ""
    single = {k: v for k, v in g.items() if "resnetblock_sequential" not in k}
    assert to_ours("generator", single, ref)[1] == ""
    g["model_res_img.2.resnetblock_sequential.5.bias"] = g["model_res_img.2.conv_block.5.bias"] + 1
    assert to_ours("generator", g, ref)[1] == (
        "1 resnetblock_sequential tensor(s) differ from their conv_block copy "
        "(model_res_img.2.resnetblock_sequential.5.bias)"
    )
    del single["model_final_img.1.bias"]
    assert to_ours("generator", single, ref)[1] == "1 missing key(s) (model_final_img.1.bias)"


def test_epochs(tmp_path):
    for name in ("2_net_G.pth", "10_net_G.pth", "latest_net_G.pth", "20_net_D.pth"):
        (tmp_path / name).write_text("not weights")
    assert ned_epoch(tmp_path) == "10"  # the highest numbered epoch with a generator
    with pytest.raises(UserError, match=r"no epoch 15 .*; epochs present: 2, 10, latest$"):
        read_ned_renderer(tmp_path, "15")
    with pytest.raises(FormatError, match=r"latest_net_G.pth: not a PyTorch weight file"):
        read_ned_renderer(tmp_path, "latest")
    (tmp_path / "other").mkdir()
    with pytest.raises(UserError, match=r"no NED renderer checkpoint there"):
        read_ned_renderer(tmp_path / "other")


def test_train_from_ned_and_import_a_run(ned_nets, processed_tiny, tmp_path, python_exe, python_env, capsys):
    nets, d = ned_nets
    runs = tmp_path / "runs"
    args = tiny_renderer_args(processed_tiny, runs) + [f"init_from={d}@15"]
    with pytest.raises(SystemExit) as exc:
        train_main(args)  # the tiny preset: refused before anything is made
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "needs size=ned n_frames_g=3" in err and len(err.strip().splitlines()) == 1
    assert not (runs / "renderer").exists()
    proc = run_module(
        python_exe,
        python_env,
        "renderer.train",
        *args,
        "size=ned",
        "image_size=32",
        "batch_size=1",
        "frames_per_step=1",
        "--perceptual",
        "off",
        "engine.max_steps=1",
        "engine.tensorboard=false",
    )
    out = proc.stdout + proc.stderr
    assert (
        "initialised generator, disc_image, disc_mouth from NED's renderer" in out
        and "not used by this run: disc_eyes" in out
    )
    ckpt = load_checkpoint(list_checkpoints(runs / "renderer" / "W001" / "checkpoints")[-1][1])
    g0 = nets["G"].state_dict()["model_final_img.1.weight"]
    assert 0 < (ckpt["nets"]["generator"]["decoder.14.weight"] - g0).abs().max() < 1e-2  # one step away from NED's
    # a NED per-actor renderer as one of our runs, rendered by renderer.infer
    ned_main([str(d), "--out", str(runs / "renderer" / "ned_actor"), "--data-dir", str(processed_tiny)])
    assert "written as a run" in capsys.readouterr().out
    renderer = NeuralRenderer.load(runs / "renderer" / "ned_actor", "cpu")
    assert renderer.actor == "ned_actor" and renderer.image_size == 256 and renderer.n_frames_g == 3
    assert torch.equal(renderer.generator.state_dict()["decoder.14.weight"], g0)
