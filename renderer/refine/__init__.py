"""The generic warp refiner (`--renderer warp_refine`): one small network for every identity that repairs what
the warp renderer cannot do (shading, the inside of the mouth, stretched texture). No per-person training.

- `net`: the network (`RefineNet`, a small U-Net with a zero-initialised output: an untrained refiner is the
  warp) and its size presets;
- `data`: its input (`refine_inputs`: warped crop, stretch map, mouth and eye openings, face hull) and the
  training pairs (`PairData`: a frame warped to another frame's tracked mesh -> that frame's real crop);
- `step`: one training step (`train_step`), which the trainer calls and `evaluation.bench` times;
- `train`: the training loop, `python -m renderer.refine` (its command line and run dir);
- `inference`: `RefineRenderer`, the warp renderer followed by the trained network.
"""
