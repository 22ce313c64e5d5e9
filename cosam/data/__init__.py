"""Data: domain registry, folder reader, task orders, transforms, prompt simulation, synthetic data."""

from cosam.data.benchmark import SYNTHETIC_MARKER, Benchmark, Task, build_benchmark, cap_samples
from cosam.data.domains import (
    LAYOUTS,
    NAMED_ORDERS,
    PAPER_ORDER,
    PROBE,
    PROBE_TASK_ID,
    REVERSE_ORDER,
    TASK_IDS,
    DomainSpec,
    resolve_order,
)
from cosam.data.prompts import (
    PROMPT_TYPES,
    Prompt,
    box_from_label,
    draw_prompt_types,
    make_prompt,
    noisy_mask,
    sample_points,
)
from cosam.data.reader import SamplePath, SplitSpec, list_samples, load_image, load_mask, load_pair
from cosam.data.synthetic import make_synthetic_benchmark
from cosam.data.transforms import large_scale_jitter, resize_eval

__all__ = [
    "LAYOUTS",
    "NAMED_ORDERS",
    "PAPER_ORDER",
    "PROBE",
    "PROBE_TASK_ID",
    "PROMPT_TYPES",
    "REVERSE_ORDER",
    "SYNTHETIC_MARKER",
    "TASK_IDS",
    "Benchmark",
    "DomainSpec",
    "Prompt",
    "SamplePath",
    "SplitSpec",
    "Task",
    "box_from_label",
    "build_benchmark",
    "cap_samples",
    "draw_prompt_types",
    "large_scale_jitter",
    "list_samples",
    "load_image",
    "load_mask",
    "load_pair",
    "make_prompt",
    "make_synthetic_benchmark",
    "noisy_mask",
    "resize_eval",
    "resolve_order",
    "sample_points",
]
