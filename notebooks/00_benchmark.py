# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 — The benchmark
#
# **Question: what does the model see?** Which domains make up the task sequence, in which
# order, with how many images; what images and masks look like in each domain; what the three
# training prompts (box, points, noisy mask) look like; and where each domain's data comes from
# (substitutes for the paper's datasets, licences).

# %%
# %config InlineBackend.figure_format = 'png'
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

import cosam.notebook as nb
from cosam import gallery, plots, report_tables
from cosam.report import markdown_table

plots.setup()
nb.begin(globals())

# %% tags=["parameters"]
profile = "cpu"  # smoke | cpu | paper: sets the caps and the model input size
order = "paper"  # paper | reverse | shuffled | list of task names
seed = 0  # seeds a shuffled order and the prompt draws
data_root = None  # None: $COSAM_DATA, ../shared/data/cosam-mini, else generated SYNTHETIC data
results_dir = "results/runs"
cache_dir = None
n_per_domain = 4  # sample images shown per domain

# %%
params = nb.end(
    globals(),
    declared=["profile", "order", "seed", "data_root", "results_dir", "cache_dir", "n_per_domain"],
)
params

# %%
import torch

from cosam.data import build_benchmark, load_pair, make_prompt, resize_eval
from cosam.io import portable, write_csv
from cosam.resources import resolve_data_root

cfg = nb.config_for(params, "zeroshot", seed)
root = resolve_data_root(cfg)
d = cfg.data
full = build_benchmark(root, d.layout, d.order, seed, domains=d.tasks)  # every pair on disk
used = build_benchmark(
    root,
    d.layout,
    d.order,
    seed,
    d.train_cap,
    d.test_cap,
    d.probe_cap,
    val_cap=d.val_cap,
    domains=d.tasks,
)  # what the profile uses (validation carved from train)
synthetic = full.synthetic
report_dir = Path(results_dir) / profile / "reports"
display(
    Markdown(
        f"Data: **{'SYNTHETIC generated data (not a real benchmark)' if synthetic else 'real data'}** "
        f"at `{portable(root)}`, layout `{d.layout}`, order `{order}`; profile `{profile}` "
        f"(caps train {d.train_cap}, test {d.test_cap}, probe {d.probe_cap}; {d.val_cap} validation "
        f"pairs per domain held out of train, on which settings are tuned)."
        + (
            " MVTec_I is `piped` (paper impurities) since 2026-12-02; `data.layout=cosam-mini-mtd` "
            "restores the magnetic-tile `mtd_a` of earlier runs."
            if d.layout == "cosam-mini"
            else ""
        )
    )
)

# %% [markdown]
# ## Domains in training order

# %%
rows = report_tables.domain_rows(full, used)
write_csv(report_dir / "00_benchmark_domains.csv", rows)
display(Markdown(markdown_table(rows)))

# %%
fig, ax = plt.subplots(figsize=(7, 2.6))
names = [r["slot"] for r in rows]
ax.bar(range(len(rows)), [r["train"] for r in rows], label="train (on disk)")
ax.bar(
    range(len(rows)),
    [r["test"] for r in rows],
    bottom=[r["train"] for r in rows],
    label="test (on disk)",
)
ax.plot(
    range(len(rows)),
    [r["train_used"] for r in rows],
    "k_",
    ms=14,
    mew=2,
    label=f"train used by {profile}",
)
ax.set_xticks(range(len(rows)), names, rotation=30, ha="right")
ax.set_ylabel("image / mask pairs")
ax.set_title(plots.title("Pairs per domain (training order, then the probe)", synthetic))
ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
plt.show()
# %% [markdown]
# ## Sample images with their masks (test split; red = ground-truth foreground)

# %%
grid = []
for task in full.with_probe():
    grid.append((task.name, [load_pair(s) for s in task.test[:n_per_domain]]))
gallery.show_jpeg(gallery.sample_grid(grid, plots.title("Samples per domain", synthetic)))

# %% [markdown]
# ## The three training prompts on one image
#
# Training draws one prompt type per image (reference §5): the tight ground-truth box, 10
# positive points sampled on the foreground, or the mask with noise on its edges at a quarter of
# the input size. Evaluation always uses the box. The image is stretched to the model's square
# input, as in training.

# %%
size = cfg.model.image_size or 1024
sample, image, mask = gallery.illustrative_sample(full.tasks)  # a mask covering 5-50% of its image
img_t, label = resize_eval(image, mask, size)
gen = torch.Generator().manual_seed(seed)
prompts = [
    make_prompt(label, kind, gen, n_points=cfg.train.n_points) for kind in ("box", "points", "mask")
]
fig = gallery.draw_prompts(  # assigned: shown once (inline), not again as the cell's value
    img_t,
    label[0],
    prompts,
    plots.title(f"{sample.domain} / {sample.name} at {size} px", synthetic),
)
# %% [markdown]
# ## Substitutes and licences

# %%
readme = Path(root) / "README.md"
licences = report_tables.licence_rows(root)
if synthetic:
    note = (
        (Path(root) / "SYNTHETIC.md").read_text() if (Path(root) / "SYNTHETIC.md").is_file() else ""
    )
    display(
        Markdown(
            "These images are **SYNTHETIC**, generated by `cosam.data.synthetic` (no licence applies; "
            "the domain names are slot names only).\n\n" + note
        )
    )
elif licences:
    display(Markdown(markdown_table(licences)))
    for heading in ("### Notes on the substitutes", "## Licences and use"):
        text = report_tables.readme_section(readme, heading)
        if text:
            display(
                Markdown(f"**From the data folder's README — {heading.strip('# ')}**\n\n{text}")
            )
else:
    display(
        Markdown(
            f"`{root}` has no MANIFEST.tsv; the sources per slot are those of the table above."
        )
    )

# %% [markdown]
# ## Conclusions

# %%
tasks_rows = [r for r in rows if r["step"] != "probe"]
probe_row = next((r for r in rows if r["step"] == "probe"), None)
n_sub = sum(("substitute" in r["source"] or "stand-in" in r["source"]) for r in tasks_rows)
lines = [
    f"- The sequence has {len(tasks_rows)} tasks ({', '.join(r['slot'] for r in tasks_rows)}) with "
    f"{sum(r['train'] for r in tasks_rows)} training and {sum(r['test'] for r in tasks_rows)} test pairs on disk "
    f"({min(r['train'] for r in tasks_rows)} to {max(r['train'] for r in tasks_rows)} training pairs per task).",
    f"- The `{profile}` profile trains on {sum(r['train_used'] for r in tasks_rows)} pairs and tests on "
    f"{sum(r['test_used'] for r in tasks_rows)}"
    + (
        f"; the probe {probe_row['slot']} has {probe_row['test_used']} test images."
        if probe_row
        else "."
    ),
    f"- {n_sub} of the {len(tasks_rows)} slots hold a substitute dataset, not the paper's."
    if not synthetic
    else "- All images are SYNTHETIC: use them for testing the code, not as results.",
]
if licences:
    nc = [
        r["domain"]
        for r in licences
        if "commercial" in r["licences"].lower() or "-NC" in r["licences"]
    ]
    lines.append(
        f"- {len(nc)} of {len(licences)} domain folders carry non-commercial terms: {', '.join(nc) or 'none'}."
    )
display(Markdown("\n".join(lines)))
