"""Write the report notebooks from the cell lists below (review this file, not the .ipynb JSON).

    python notebooks/make_notebooks.py          # rewrites notebooks/*.ipynb
    python notebooks/make_notebooks.py OUT_DIR  # writes them elsewhere (the tests compare the two)

Each notebook: the question it answers, imports + ``nb.begin(globals())``, a ``parameters`` cell
(papermill injects overrides after it), ``params = nb.end(...)`` (a misspelt ``-p`` name fails with
the list of valid names), then work that calls ``cosam`` only, and conclusions computed from the
loaded numbers. Execute them with ``notebooks/run_reports.py``.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import List, Tuple

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
Cell = Tuple[str, str]  # ("md" | "code" | "params", source)

SETUP = """\
%config InlineBackend.figure_format = 'png'
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

import cosam.notebook as nb
from cosam import plots
from cosam.report import markdown_table

plots.setup(dpi=80)
nb.begin(globals())"""


def md(text: str) -> Cell:
    return ("md", textwrap.dedent(text).strip())


def code(text: str) -> Cell:
    return ("code", textwrap.dedent(text).strip())


def params(text: str) -> Cell:
    return ("params", textwrap.dedent(text).strip())


def end(names: List[str]) -> Cell:
    return code(f"params = nb.end(globals(), declared={names!r})\nparams")


# ----------------------------------------------------------------------------------------------
# 00: the benchmark tour
# ----------------------------------------------------------------------------------------------

BENCHMARK: List[Cell] = [
    md("""
    # 00 — The benchmark

    **Question: what does the model see?** Which domains make up the task sequence, in which
    order, with how many images; what images and masks look like in each domain; what the three
    training prompts (box, points, noisy mask) look like; and where each domain's data comes from
    (substitutes for the paper's datasets, licences).
    """),
    code(SETUP),
    params("""
    profile = "cpu"        # smoke | cpu | paper: sets the caps and the model input size
    order = "paper"        # paper | reverse | shuffled | list of task names
    seed = 0               # seeds a shuffled order and the prompt draws
    data_root = None       # None: $COSAM_DATA, ../shared/data/cosam-mini, else generated SYNTHETIC data
    results_dir = "results/runs"
    cache_dir = None
    n_per_domain = 4       # sample images shown per domain
    """),
    end(["profile", "order", "seed", "data_root", "results_dir", "cache_dir", "n_per_domain"]),
    code("""
    import torch
    from cosam.data import build_benchmark, load_pair, make_prompt, resize_eval
    from cosam.engine import resolve_data_root
    from cosam.io import write_csv

    cfg = nb.config_for(params, "zeroshot", seed)
    root = resolve_data_root(cfg)
    d = cfg.data
    full = build_benchmark(root, d.layout, d.order, seed)  # every pair on disk
    used = build_benchmark(root, d.layout, d.order, seed, d.train_cap, d.test_cap, d.probe_cap,
                           val_cap=d.val_cap)  # what the profile uses (validation carved from train)
    synthetic = full.synthetic
    report_dir = Path(results_dir) / profile / "reports"
    display(Markdown(f"Data: **{'SYNTHETIC generated data (not a real benchmark)' if synthetic else 'real data'}** "
                     f"at `{root}`, layout `{d.layout}`, order `{order}`; profile `{profile}` "
                     f"(caps train {d.train_cap}, test {d.test_cap}, probe {d.probe_cap}; {d.val_cap} validation "
                     f"pairs per domain held out of train, on which settings are tuned)."
                     + (" MVTec_I is `piped` (paper impurities) since 2026-12-02; `data.layout=cosam-mini-mtd` "
                        "restores the magnetic-tile `mtd_a` of earlier runs." if d.layout == "cosam-mini" else "")))
    """),
    md("## Domains in training order"),
    code("""
    rows = plots.domain_rows(full, used)
    write_csv(report_dir / "00_benchmark_domains.csv", rows)
    display(Markdown(markdown_table(rows)))
    """),
    code("""
    fig, ax = plt.subplots(figsize=(7, 2.6))
    names = [r["slot"] for r in rows]
    ax.bar(range(len(rows)), [r["train"] for r in rows], label="train (on disk)")
    ax.bar(range(len(rows)), [r["test"] for r in rows], bottom=[r["train"] for r in rows], label="test (on disk)")
    ax.plot(range(len(rows)), [r["train_used"] for r in rows], "k_", ms=14, mew=2, label=f"train used by {profile}")
    ax.set_xticks(range(len(rows)), names, rotation=30, ha="right")
    ax.set_ylabel("image / mask pairs")
    ax.set_title(plots.title("Pairs per domain (training order, then the probe)", synthetic))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0));
    """),
    md("## Sample images with their masks (test split; red = ground-truth foreground)"),
    code("""
    grid = []
    for task in list(full.tasks) + ([full.probe] if full.probe is not None else []):
        grid.append((task.name, [load_pair(s) for s in task.test[:n_per_domain]]))
    plots.show_jpeg(plots.sample_grid(grid, plots.title("Samples per domain", synthetic)))
    """),
    md("""
    ## The three training prompts on one image

    Training draws one prompt type per image (reference §5): the tight ground-truth box, 10
    positive points sampled on the foreground, or the mask with noise on its edges at a quarter of
    the input size. Evaluation always uses the box. The image is stretched to the model's square
    input, as in training.
    """),
    code("""
    size = cfg.model.image_size or 1024
    sample, image, mask = plots.illustrative_sample(full.tasks)  # a mask covering 5-50% of its image
    img_t, label = resize_eval(image, mask, size)
    gen = torch.Generator().manual_seed(seed)
    prompts = [make_prompt(label, kind, gen, n_points=cfg.train.n_points) for kind in ("box", "points", "mask")]
    plots.draw_prompts(img_t, label[0], prompts, plots.title(f"{sample.domain} / {sample.name} at {size} px", synthetic));
    """),
    md("## Substitutes and licences"),
    code("""
    readme = Path(root) / "README.md"
    licences = plots.licence_rows(root)
    if synthetic:
        note = (Path(root) / "SYNTHETIC.md").read_text() if (Path(root) / "SYNTHETIC.md").is_file() else ""
        display(Markdown("These images are **SYNTHETIC**, generated by `cosam.data.synthetic` (no licence applies; "
                         "the domain names are slot names only).\\n\\n" + note))
    elif licences:
        display(Markdown(markdown_table(licences)))
        for heading in ("### Notes on the substitutes", "## Licences and use"):
            text = plots.readme_section(readme, heading)
            if text:
                display(Markdown(f"**From the data folder's README — {heading.strip('# ')}**\\n\\n{text}"))
    else:
        display(Markdown(f"`{root}` has no MANIFEST.tsv; the sources per slot are those of the table above."))
    """),
    md("## Conclusions"),
    code("""
    tasks_rows = [r for r in rows if r["step"] != "probe"]
    probe_row = next((r for r in rows if r["step"] == "probe"), None)
    n_sub = sum(("substitute" in r["source"] or "stand-in" in r["source"]) for r in tasks_rows)
    lines = [
        f"- The sequence has {len(tasks_rows)} tasks ({', '.join(r['slot'] for r in tasks_rows)}) with "
        f"{sum(r['train'] for r in tasks_rows)} training and {sum(r['test'] for r in tasks_rows)} test pairs on disk "
        f"({min(r['train'] for r in tasks_rows)} to {max(r['train'] for r in tasks_rows)} training pairs per task).",
        f"- The `{profile}` profile trains on {sum(r['train_used'] for r in tasks_rows)} pairs and tests on "
        f"{sum(r['test_used'] for r in tasks_rows)}"
        + (f"; the probe {probe_row['slot']} has {probe_row['test_used']} test images." if probe_row else "."),
        f"- {n_sub} of the {len(tasks_rows)} slots hold a substitute dataset, not the paper's."
        if not synthetic else "- All images are SYNTHETIC: use them for testing the code, not as results.",
    ]
    if licences:
        nc = [r["domain"] for r in licences if "commercial" in r["licences"].lower() or "-NC" in r["licences"]]
        lines.append(f"- {len(nc)} of {len(licences)} domain folders carry non-commercial terms: {', '.join(nc) or 'none'}.")
    display(Markdown("\\n".join(lines)))
    """),
]

# ----------------------------------------------------------------------------------------------
# 01: the baselines (Table 2)
# ----------------------------------------------------------------------------------------------

RUN_ALL = """\
from cosam.engine import Context, run
from cosam.io import write_csv
from cosam.report import data_label, load_run

ctx = Context()  # one model and feature cache for every run
runs = {}        # method -> [RunRecord per seed]
walls = []
for method in nb.as_list(methods):
    for s in nb.as_list(seeds):
        t0 = time.perf_counter()
        path = run(nb.config_for(params, method, int(s)), ctx=ctx)  # finished runs are reused
        runs.setdefault(method, []).append(load_run(path))
        walls.append({"method": method, "seed": int(s), "this_call_s": time.perf_counter() - t0,
                      "run_compute_s": runs[method][-1].compute_s, "run": str(path)})
records = [r for recs in runs.values() for r in recs]
label = data_label(records)
synthetic = "SYNTHETIC" in label
res = records[0].meta["resolved"]
report_dir = Path(results_dir) / profile / "reports"
display(Markdown(f"Data: **{label}**. Backbone `{res['backbone']}` at {res['image_size']} px; "
                 f"order {', '.join(res['order'])}; seeds {nb.as_list(seeds)}; profile `{profile}`."))
display(Markdown("Runs (this_call_s: this notebook's time, near 0 for a reused run; run_compute_s: the run's own "
                 "train + eval + encode seconds):\\n\\n" + markdown_table(walls, ["method", "seed", "this_call_s", "run_compute_s", "run"])))"""

BASELINE_PARAMS = """
profile = "cpu"
order = "paper"
seeds = [0]
methods = ["zeroshot", "sequential", "joint", "lwf", "ewc", "replay", "l2p", "dualprompt", "coda", "decoder_tuning",
           "sam_adapter"]
backbone = None        # None: the profile's (vit_t; LiteMedSAM fallback when its weights are absent)
data_root = None
results_dir = "results/runs"
cache_dir = None
overrides = {}         # merged into every run's config, e.g. {"train": {"epochs": 2}}
"""
BASELINE_NAMES = ["profile", "order", "seeds", "methods", "backbone", "data_root", "results_dir", "cache_dir", "overrides"]

BASELINES: List[Cell] = [
    md("""
    # 01 — Baselines (Table 2)

    **Question: how much does each continual-learning baseline forget, and how close does it get
    to joint training and to SAM zero-shot?** Every method runs over the same task sequence
    (finished runs are reused, not retrained); the report gives Table 2's Last / Avg / FF for IoU
    and BIoU, the task matrices of the sequential-family methods, and each task's IoU along the
    sequence, with the paper's published numbers beside ours for orientation only.
    """),
    code(SETUP),
    params(BASELINE_PARAMS),
    end(BASELINE_NAMES),
    code(RUN_ALL),
    md("## Table 2 layout: Last / Avg / FF for IoU and BIoU (%; mean ± std over seeds)"),
    code("""
    stats = plots.seed_stats(runs)
    write_csv(report_dir / "01_baselines_summary.csv", plots.summary_csv_rows(stats))
    from cosam.report import summary_rows
    write_csv(report_dir / "01_baselines_runs.csv", [dict(r, seed=rec.meta["config"]["seed"]) for rec, r in
                                                     zip(records, summary_rows(records))])
    display(Markdown(f"**Ours** — {label}\\n\\n" + markdown_table(plots.table2_rows(stats))))
    plots.summary_bars(stats, name=plots.title("Last / Avg / FF IoU per method", synthetic));
    """),
    code("""
    # Methods evaluated on fewer test images (SAM-Adapter in the cpu profile: the encoder runs at every
    # evaluation) are compared with every other method re-scored on the same images.
    from cosam.report import n_test_images, restrict_to_subset, summary_rows
    counts = {m: n_test_images(recs[0]) for m, recs in runs.items()}
    full_n = max([c for c in counts.values() if c] or [0])
    for m in [m for m, c in counts.items() if c and c < full_n]:
        same = []
        for other, recs in runs.items():
            try:
                rec = recs[0] if other == m else restrict_to_subset(recs[0], runs[m][0])
            except ValueError:
                continue
            same.append(summary_rows([rec])[0])
        cols = ["method", "last_iou", "avg_iou", "ff_iou", "last_biou", "avg_biou", "ff_biou"]
        display(Markdown(f"**{m} was evaluated on {counts[m]} test images (the others on {full_n}).** "
                         f"Every method on {m}'s images (first seed, %):\\n\\n" + markdown_table(same, cols, pct=cols[1:])))
    """),
    code("""
    from cosam.report import load_sweep
    sweep = load_sweep(results_dir, profile)  # written by `python -m cosam sweep` (seeds x orders), if run
    if sweep is None:
        display(Markdown("(No seeds × orders sweep in this results folder: `python -m cosam sweep --help`.)"))
    else:
        display(Markdown(f"### From the seeds × orders sweep (`{sweep.path}`)\\n\\n" + sweep.embedded_markdown()))
        sweep.figure();
    """),
    md("## Per task: zero-shot, sequential right after its task and after the last, joint (IoU %)"),
    code("""
    from cosam.report import per_domain_rows
    first = {m: recs[0] for m, recs in runs.items()}
    per_domain = per_domain_rows(first.get("zeroshot"), first.get("sequential"), first.get("joint"))
    write_csv(report_dir / "01_baselines_per_domain.csv", per_domain)
    display(Markdown(markdown_table(per_domain, pct=[k for k in per_domain[0] if k != "task"]) if per_domain else "(no runs)"))
    """),
    md("## Task matrices of the sequential-family methods (IoU %, first seed)"),
    code("""
    family = [m for m, rec in first.items() if rec.matrix.is_full_sequence]
    if family:
        ncols = 2
        nrows = math.ceil(len(family) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(10, 3.6 * nrows), squeeze=False, layout="constrained")
        for ax, m in zip(axes.flat, family):
            plots.matrix_heatmap(first[m].matrix, "iou", ax=ax, name=m)
        for ax in list(axes.flat)[len(family):]:
            ax.axis("off")
        fig.suptitle(plots.title("Task matrices (row t: after training step t)", synthetic))
    """),
    md("## IoU of each task along the sequence (dot: the step that trains the task; dashed: probe)"),
    code("""
    if family:
        ncols = 3
        nrows = math.ceil(len(family) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(11, 2.6 * nrows), squeeze=False, sharey=True, layout="constrained")
        for ax, m in zip(axes.flat, family):
            plots.task_curves(first[m].matrix, "iou", ax=ax, name=m)
        for ax in list(axes.flat)[len(family):]:
            ax.axis("off")
        axes[0, 0].legend(fontsize=6, ncol=2)
        fig.suptitle(plots.title("Per-task IoU after every step", synthetic))
    """),
    md("""
    ## The paper's published Table 2 (for orientation, not comparison)

    Published numbers from Yang et al. (arXiv 2412.06418) Table 2, five seeds; *natural* is the
    COCO IoU after the last task from the repository's older Table 1. **Backbone and data differ
    from ours**: the paper uses SAM ViT-B at 1024 px with a pretrained HQ decoder on the original
    CoSAM datasets; our runs use the backbone and data stated above (see 00_benchmark for the
    substitutes). The numbers are not comparable row by row.
    """),
    code("""
    from cosam import published
    display(Markdown(f"*{published.CITATION}* Setting: {published.SETTING}.\\n\\n"
                     + markdown_table(published.published_rows(list(runs)))))
    """),
    md("## Conclusions"),
    code("""
    def v(m, k):
        return 100 * stats[m][k][0] if m in stats else math.nan

    continual = [m for m in family if math.isfinite(v(m, "ff_iou"))]
    lines = [f"- Data: {label}."]
    if len(continual) > 1:
        by_last = sorted(continual, key=lambda m: v(m, "last_iou"))
        by_ff = sorted(continual, key=lambda m: v(m, "ff_iou"))
        best, least, most = by_last[-1], by_ff[0], by_ff[-1]
        lines.append(f"- Among the {len(continual)} continual methods, {best} ends best on Last-IoU ({v(best, 'last_iou'):.1f}%), "
                     f"{least} forgets least (FF-IoU {v(least, 'ff_iou'):.1f} points) and {most} forgets most "
                     f"(FF-IoU {v(most, 'ff_iou'):.1f} points).")
    if "sequential" in stats:
        lines.append(f"- Sequential fine-tuning forgets {v('sequential', 'ff_iou'):.1f} points of IoU on average (FF-IoU) "
                     f"and ends at {v('sequential', 'last_iou'):.1f}% Last-IoU (Avg-IoU {v('sequential', 'avg_iou'):.1f}%).")
    if "zeroshot" in stats:
        zs = v("zeroshot", "last_iou")
        above = [m for m in continual if v(m, "last_iou") > zs]
        lines.append(f"- SAM zero-shot scores {zs:.1f}% IoU; {len(above)} of {len(continual)} continual methods end above it"
                     + (f" ({', '.join(above)})." if above else "."))
        if "sequential" in stats:
            pub = published.TABLE2["HQ-SAM"]["last_iou"][0] - published.TABLE2["SAM"]["last_iou"][0]
            lines.append(f"- Sequential minus zero-shot Last-IoU is {v('sequential', 'last_iou') - zs:+.1f} points here "
                         f"and {pub:+.1f} in the paper's Table 2.")
    if "joint" in stats:
        gap = [m for m in continual if v(m, "last_iou") < v("joint", "last_iou")]
        lines.append(f"- Joint training (upper bound) reaches {v('joint', 'last_iou'):.1f}% Last-IoU; "
                     f"{len(gap)} of {len(continual)} continual methods stay below it.")
    display(Markdown("\\n".join(lines)))
    """),
]

# ----------------------------------------------------------------------------------------------
# 05: zero-shot retention on the natural-image probe
# ----------------------------------------------------------------------------------------------

ZERO_SHOT: List[Cell] = [
    md("""
    # 05 — Zero-shot retention on the natural-image probe

    **Question: does adapting SAM to the task sequence cost it its zero-shot ability on natural
    images, and which methods keep it?** The probe (COCO, test only, never trained on) is scored
    after every task step; SAM zero-shot is the reference. Example masks compare zero-shot with
    the final model of one method.
    """),
    code(SETUP),
    params(BASELINE_PARAMS + """n_examples = 4        # probe images shown with their predicted masks
example_method = "sequential"   # whose final model is shown beside zero-shot
"""),
    end(BASELINE_NAMES + ["n_examples", "example_method"]),
    code(RUN_ALL),
    md("## Probe IoU after every step (first seed; dashed: SAM zero-shot)"),
    code("""
    first = {m: recs[0] for m, recs in runs.items()}
    with_probe = {m: r for m, r in first.items() if r.matrix.probe is not None}
    if not with_probe:
        raise RuntimeError("these runs have no probe (data.include_probe=false); nothing to report")
    zs_source = "zeroshot run" if "zeroshot" in with_probe else "row 0 of the first run"
    zero_shot = (with_probe.get("zeroshot") or next(iter(with_probe.values()))).matrix.summary("iou")["probe_zero_shot"]
    probe_name = next(iter(with_probe.values())).matrix.probe
    plots.probe_curves(with_probe, zero_shot, name=plots.title(f"Probe ({probe_name}) IoU after every step", synthetic));
    """),
    code("""
    table = plots.probe_rows(with_probe)
    write_csv(report_dir / "05_zero_shot_probe.csv", table)
    display(Markdown(f"Probe IoU (%) after every step; zero-shot from the {zs_source}; drop = before − after the last step.\\n\\n"
                     + markdown_table(table, pct=[k for k in table[0] if k != "method"])))
    if any(len(recs) > 1 for recs in runs.values()):
        stats = plots.seed_stats(runs, keys=("probe_zero_shot", "probe_last"))
        display(Markdown("Over seeds (mean ± std):\\n\\n" + markdown_table(
            [{"method": m, "probe before": plots.fmt_stat(s["probe_zero_shot"]), "probe after last": plots.fmt_stat(s["probe_last"])}
             for m, s in stats.items()])))
    """),
    md("""
    ## Example masks on probe images: zero-shot vs the final model

    The engine keeps only the **last** step's state file (`state/step_<n>.pt`), so the examples can
    only show the final model, not the model after an intermediate task. Masks are predicted through
    `cosam.inspect.predict_examples` with the evaluation's box prompt (red: ground truth; blue: prediction).
    """),
    code("""
    from cosam.data import load_pair
    from cosam.inspect import benchmark_of, predict_examples

    shown = [m for m in ("zeroshot", example_method) if m in first]
    agree = math.nan
    if len(shown) == 2 and n_examples > 0:
        bench = benchmark_of(first[example_method].path)
        samples = list(bench.probe.test[:n_examples])
        preds, worst = {}, 0.0
        for m in shown:
            ex = predict_examples(first[m].path, samples, model=ctx.model)
            preds[m] = [(e.pred, e.iou) for e in ex]
            stored = first[m].matrix.per_image(first[m].matrix.n_rows - 1)[bench.probe.name]
            worst = max([worst] + [abs(e.iou - stored[i][0]) for i, e in enumerate(ex)])
        agree = worst
        pairs = [load_pair(s) for s in samples]
        plots.show_jpeg(plots.example_grid([p[0] for p in pairs], [p[1] for p in pairs], preds, labels=[s.name for s in samples],
                        suptitle=plots.title(f"{bench.probe.name}: zero-shot vs final {example_method}", synthetic)))
        display(Markdown(f"The example IoUs reproduce the run's stored per-image scores (largest difference {agree:.2g})."))
    else:
        display(Markdown(f"(examples need the zeroshot and {example_method} runs; methods were {list(first)})"))
    """),
    md("## Conclusions"),
    code("""
    last = {m: plots.probe_series(r)[1][-1] for m, r in with_probe.items()}  # probe IoU after the last step
    trained = {m: x for m, x in last.items() if m != "zeroshot" and math.isfinite(x)}
    lines = [f"- Data: {label}.", f"- SAM zero-shot scores {100 * zero_shot:.1f}% IoU on the probe ({probe_name})."]
    if len(trained) == 1:
        (only, x), = trained.items()
        lines.append(f"- After the last step, {only} scores {100 * x:.1f}% ({100 * (x - zero_shot):+.1f} points vs zero-shot).")
    elif trained:
        ranked = sorted(trained, key=trained.get)
        keep, lose = ranked[-1], ranked[0]
        above = [m for m, x in trained.items() if x >= zero_shot]
        lines.append(f"- After the last step, {keep} keeps the most ({100 * trained[keep]:.1f}%, "
                     f"{100 * (trained[keep] - zero_shot):+.1f} points vs zero-shot) and {lose} the least "
                     f"({100 * trained[lose]:.1f}%, {100 * (trained[lose] - zero_shot):+.1f}); "
                     f"{len(above)} of {len(trained)} trained methods stay at or above zero-shot.")
    if "sequential" in with_probe and with_probe["sequential"].matrix.is_full_sequence:
        steps, vals = plots.probe_series(with_probe["sequential"])
        k = min(range(len(vals)), key=lambda i: vals[i])
        lines.append(f"- Sequential fine-tuning is lowest on the probe after step {k} "
                     f"({with_probe['sequential'].matrix.rows[k]}: {100 * vals[k]:.1f}%) and ends at {100 * vals[-1]:.1f}%.")
    if math.isfinite(agree):
        lines.append(f"- Re-predicting {len(samples)} probe images from the saved final states reproduces the stored "
                     f"per-image IoU (largest difference {agree:.2g}).")
    display(Markdown("\\n".join(lines)))
    """),
]


# ----------------------------------------------------------------------------------------------
# 02: MoDA on the three bases
# ----------------------------------------------------------------------------------------------

MODA_PARAMS = """
profile = "cpu"
order = "paper"
seeds = [0]
bases = ["sequential", "decoder_tuning", "sam_adapter"]   # each runs alone and with MoDA (<base>_moda)
moda_options = {}      # MoDA options for every *_moda run, e.g. {"router": "cosine"}
backbone = None
data_root = None
results_dir = "results/runs"
cache_dir = None
overrides = {}
"""
MODA_NAMES = ["profile", "order", "seeds", "bases", "moda_options", "backbone", "data_root", "results_dir",
              "cache_dir", "overrides"]

MODA: List[Cell] = [
    md("""
    # 02 — MoDA on HQ-SAM, Decoder-Tuning and SAM-Adapter

    **Question: does MoDA's adapter pool with a token router stop forgetting, and what does it
    cost?** Each base (HQ-SAM = `sequential`, `decoder_tuning`, `sam_adapter`) runs alone and
    with MoDA over the same sequence; SAM zero-shot is the reference. The report gives Last / Avg /
    FF, the task matrices, the router's task-id accuracy and confusion matrix after the last task,
    and the storage each method keeps per task. Finished runs are reused, not retrained.
    """),
    code(SETUP),
    params(MODA_PARAMS),
    end(MODA_NAMES),
    code("""
    from cosam.engine import Context, run
    from cosam.io import write_csv
    from cosam.report import data_label, load_router, load_run, moda_rows, router_accuracy_rows

    methods = ["zeroshot"] + [m for b in nb.as_list(bases) for m in (b, f"{b}_moda")]
    ctx = Context()
    runs, walls = {}, []
    for method in methods:
        for s in nb.as_list(seeds):
            extra = {"method_options": dict(moda_options)} if method.endswith("_moda") and moda_options else None
            t0 = time.perf_counter()
            path = run(nb.config_for(params, method, int(s), extra=extra), ctx=ctx)
            runs.setdefault(method, []).append(load_run(path))
            walls.append({"method": method, "seed": int(s), "this_call_s": time.perf_counter() - t0,
                          "run_compute_s": runs[method][-1].compute_s, "run": str(path)})
    records = [r for recs in runs.values() for r in recs]
    label = data_label(records)
    synthetic = "SYNTHETIC" in label
    res = records[0].meta["resolved"]
    report_dir = Path(results_dir) / profile / "reports"
    first = {m: recs[0] for m, recs in runs.items()}
    display(Markdown(f"Data: **{label}**. Backbone `{res['backbone']}` at {res['image_size']} px; "
                     f"order {', '.join(res['order'])}; seeds {nb.as_list(seeds)}; profile `{profile}`."))
    display(Markdown(markdown_table(walls, ["method", "seed", "this_call_s", "run_compute_s", "run"])))
    """),
    md("## Each base alone and with MoDA (first seed; IoU/BIoU %, router accuracy after the last task)"),
    code("""
    table = moda_rows(first)
    write_csv(report_dir / "02_moda_table.csv", table)
    pct = [k for k in table[0] if k.endswith(("_iou", "_biou"))] + ["router_acc"]
    display(Markdown(markdown_table(table, pct=pct)))
    if any(len(recs) > 1 for recs in runs.values()):
        stats = plots.seed_stats(runs)
        display(Markdown("Over seeds (mean ± std):\\n\\n" + markdown_table(plots.table2_rows(stats))))
    from cosam.report import load_sweep
    sweep = load_sweep(results_dir, profile)
    if sweep is not None:
        display(Markdown(f"### From the seeds × orders sweep (`{sweep.path}`)\\n\\n" + sweep.embedded_markdown()))
        sweep.figure();
    """),
    code("""
    from cosam.report import n_test_images, restrict_to_subset
    counts = {m: n_test_images(r) for m, r in first.items()}
    full_n = max([c for c in counts.values() if c] or [0])
    capped = [m for m, c in counts.items() if c and c < full_n]
    if capped:
        sub = first[capped[0]]
        same = []
        for m, r in first.items():
            try:
                same.append(moda_rows({m: r if m in capped else restrict_to_subset(r, sub)})[0])
            except ValueError:
                pass
        display(Markdown(f"**{', '.join(capped)} ran on {counts[capped[0]]} test images (the others on {full_n}).** "
                         f"Every method on those images (%):\\n\\n" + markdown_table(same, pct=pct)))
    """),
    md("## Task matrices: each base (left) and with MoDA (right), IoU %"),
    code("""
    pairs = [(b, f"{b}_moda") for b in nb.as_list(bases) if b in first and f"{b}_moda" in first]
    if pairs:
        fig, axes = plt.subplots(len(pairs), 2, figsize=(10, 3.6 * len(pairs)), squeeze=False, layout="constrained")
        for (b, m), row in zip(pairs, axes):
            plots.matrix_heatmap(first[b].matrix, "iou", ax=row[0], name=b)
            plots.matrix_heatmap(first[m].matrix, "iou", ax=row[1], name=m)
        fig.suptitle(plots.title("Task matrices (row t: after training step t)", synthetic))
    """),
    md("## The router: confusion after the last task (% of each domain's test images per adapter)"),
    code("""
    routed = {m: load_router(r) for m, r in first.items() if load_router(r)}
    if routed:
        fig, axes = plt.subplots(1, len(routed), figsize=(4.6 * len(routed), 4.2), squeeze=False, layout="constrained")
        for ax, (m, router) in zip(axes[0], routed.items()):
            plots.confusion_heatmap(router["final"], ax=ax, name=m)
        fig.suptitle(plots.title("Router confusion after the last task", synthetic))
        for m, router in routed.items():
            acc_rows = router_accuracy_rows(router)
            write_csv(report_dir / f"02_moda_router_{m}.csv", acc_rows)
        m0 = next(iter(routed))
        acc_rows = router_accuracy_rows(routed[m0])
        display(Markdown(f"Task-id accuracy of `{m0}` on the seen tasks' test images after each step (%):\\n\\n"
                         + markdown_table(acc_rows, list(acc_rows[-1]), pct=[k for k in acc_rows[-1] if k != "step"])))
    """),
    md("## Storage and compute per task"),
    code("""
    cost = [{"method": r["method"], "stored params / task": r["stored_params_per_task"],
             "stored params, all": r["stored_params_total"], "buffer images": r["buffer_images"],
             "train s": r["train_s"]} for r in table]
    display(Markdown(markdown_table(cost)))
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(cost) + 1.2), layout="constrained")
    ax.barh([c["method"] for c in cost], [(c["stored params, all"] or 0) / 1e6 for c in cost], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("parameters stored after the last task (millions)")
    ax.set_title(plots.title("What each method keeps", synthetic));
    """),
    md("## Conclusions"),
    code("""
    by = {r["method"]: r for r in table}
    lines = [f"- Data: {label}."]
    for b, m in pairs:
        d = 100 * (by[m]["last_iou"] - by[b]["last_iou"])
        ff = 100 * by[m]["ff_iou"]
        ok = "meets" if d > 0 and ff <= 1.0 else "misses"
        lines.append(f"- {b}: Last-IoU {100 * by[b]['last_iou']:.1f}% → {100 * by[m]['last_iou']:.1f}% with MoDA ({d:+.1f} points); "
                     f"FF-IoU {100 * by[b]['ff_iou']:.1f} → {ff:.1f} points; router accuracy "
                     f"{100 * (by[m]['router_acc'] or 0):.1f}%. This {ok} the target (Last up, FF ≤ 1 point).")
    if "zeroshot" in by:
        # zero-shot on the images each MoDA run was scored on (a capped run: its own subset)
        zs = {m: (by["zeroshot"]["last_iou"] if counts.get(m) == full_n else
                  moda_rows({"zeroshot": restrict_to_subset(first["zeroshot"], first[m])})[0]["last_iou"]) for _, m in pairs}
        above = [m for _, m in pairs if by[m]["last_iou"] > zs[m]]
        lines.append(f"- SAM zero-shot scores {100 * by['zeroshot']['last_iou']:.1f}% Last-IoU; "
                     f"{len(above)} of {len(pairs)} MoDA variants end above it on the same test images"
                     + (f" ({', '.join(above)})." if above else "."))
    for m, router in routed.items():
        final = router["final"]
        worst = min(final["per_task"], key=final["per_task"].get)
        conf = final["confusion"][worst]
        wrong = max((c, final["adapters"][j]) for j, c in enumerate(conf) if final["adapters"][j] != worst) if len(conf) > 1 else (0, "-")
        lines.append(f"- {m}: the router is least accurate on {worst} ({100 * final['per_task'][worst]:.1f}%), "
                     f"whose images it sends most often to the {wrong[1]} adapter ({wrong[0]} images).")
    display(Markdown("\\n".join(lines)))
    """),
]

# ----------------------------------------------------------------------------------------------
# 03: MoDA ablations (router side, on one trained pool)
# ----------------------------------------------------------------------------------------------

ABLATIONS: List[Cell] = [
    md("""
    # 03 — MoDA ablations

    **Question: which parts of MoDA's router matter?** GFT alone vs GFT + GAT, the number of
    assistant tokens (0/1/4/9), trained vs the released random tokens, one-way vs the released full
    attention, linear vs cosine router, and the buffer size (1/5/10/20 images per task).

    None of these touches the adapters (each adapter trains on its own task from the base's
    initial state), and the router restarts from the same seeded values at every retraining, so
    `cosam.ablation.reroute` retrains only the router on the finished pool of one MoDA run and
    evaluates: the rows equal those of a full run with the same options (tested). `steps="last"`
    gives the final row (Last and the final router accuracy); `steps="all"` the whole matrix.
    """),
    code(SETUP),
    params("""
    profile = "cpu"
    order = "paper"
    seed = 0
    method = "sequential_moda"   # the MoDA run whose pool is re-routed
    steps = "last"               # last | all
    variants = {
        "default: k=9, trained, one-way, linear, buffer 10": {},
        "GFT only (k=0)": {"n_gat": 0},
        "k=1": {"n_gat": 1},
        "k=4": {"n_gat": 4},
        "random tokens, one-way": {"train_tokens": False},
        "random tokens, full attention (released)": {"attention": "full", "train_tokens": False},
        "cosine router": {"router": "cosine"},
        "buffer 1": {"buffer_size": 1},
        "buffer 5": {"buffer_size": 5},
        "buffer 20": {"buffer_size": 20},
    }
    backbone = None
    data_root = None
    results_dir = "results/runs"
    cache_dir = None
    overrides = {}
    """),
    end(["profile", "order", "seed", "method", "steps", "variants", "backbone", "data_root", "results_dir",
         "cache_dir", "overrides"]),
    code("""
    from cosam.ablation import reroute
    from cosam.engine import Context, run
    from cosam.io import write_csv
    from cosam.report import data_label, load_run

    ctx = Context()
    base_run = load_run(run(nb.config_for(params, method, int(seed)), ctx=ctx))
    label = data_label([base_run])
    synthetic = "SYNTHETIC" in label
    report_dir = Path(results_dir) / profile / "reports"
    rows = []
    for i, (name, options) in enumerate(variants.items()):
        t0 = time.perf_counter()
        r = reroute(base_run.path, options, steps=steps, ctx=ctx)
        rows.append({"variant": name, "options": str(options), **{k: r["summary"].get(k) for k in
                    ("router_accuracy", "last_iou", "last_biou", "avg_iou", "ff_iou")},
                     "router_s": sum(r["router_seconds"]), "wall_s": time.perf_counter() - t0})
    write_csv(report_dir / "03_ablations.csv", rows)
    res = base_run.meta["resolved"]
    display(Markdown(f"Data: **{label}**. `{method}`, backbone `{res['backbone']}` at {res['image_size']} px; "
                     f"order {', '.join(res['order'])}; seed {seed}; profile `{profile}`; steps `{steps}`."))
    """),
    md("## Router accuracy and Last after the last task, per variant (%)"),
    code("""
    cols = ["variant", "router_accuracy", "last_iou", "last_biou"] + (["avg_iou", "ff_iou"] if steps == "all" else []) + ["router_s", "wall_s"]
    display(Markdown(markdown_table(rows, cols, pct=["router_accuracy", "last_iou", "last_biou", "avg_iou", "ff_iou"])))
    plots.ablation_bars(rows, name=plots.title(f"{method}: router ablations", synthetic));
    """),
    md("## Conclusions"),
    code("""
    by = {r["variant"]: r for r in rows}
    default = rows[0]
    lines = [f"- Data: {label}.", f"- Default ({default['variant']}): router accuracy {100 * default['router_accuracy']:.1f}%, "
             f"Last-IoU {100 * default['last_iou']:.1f}%."]
    best = max(rows, key=lambda r: r["router_accuracy"])
    worst = min(rows, key=lambda r: r["router_accuracy"])
    lines.append(f"- Most accurate router: {best['variant']} ({100 * best['router_accuracy']:.1f}%); least: "
                 f"{worst['variant']} ({100 * worst['router_accuracy']:.1f}%, Last-IoU {100 * worst['last_iou']:.1f}%).")
    spread = 100 * (max(r["last_iou"] for r in rows) - min(r["last_iou"] for r in rows))
    lines.append(f"- Across variants Last-IoU spans {spread:.1f} points: the router decides which adapter segments, "
                 f"so its accuracy is what the ablations move.")
    for r in rows[1:]:
        lines.append(f"- {r['variant']}: router accuracy {100 * (r['router_accuracy'] - default['router_accuracy']):+.1f} points, "
                     f"Last-IoU {100 * (r['last_iou'] - default['last_iou']):+.1f} points vs the default.")
    display(Markdown("\\n".join(lines)))
    """),
]

# ----------------------------------------------------------------------------------------------
# 04: t-SNE of GFT queries vs plain encoder features
# ----------------------------------------------------------------------------------------------

TSNE: List[Cell] = [
    md("""
    # 04 — Do the Global Feature Tokens separate the domains?

    **Question: is the GFT query a better domain signature than the plain encoder's features?**
    For every test image: the GFT query of a finished MoDA run (trained tokens), the same query with
    the released random tokens, and the mean-pooled SAM image embedding. Each is embedded with t-SNE
    (scikit-learn) and scored with the silhouette coefficient on the true domains, in the feature
    space (cosine) and in the 2-D map.
    """),
    code(SETUP),
    params("""
    profile = "cpu"
    order = "paper"
    seed = 0
    method = "sequential_moda"
    per_domain = None      # test images per domain (None: all)
    perplexity = 30.0
    backbone = None
    data_root = None
    results_dir = "results/runs"
    cache_dir = None
    overrides = {}
    """),
    end(["profile", "order", "seed", "method", "per_domain", "perplexity", "backbone", "data_root", "results_dir",
         "cache_dir", "overrides"]),
    code("""
    from cosam.analysis import gft_features, separation
    from cosam.engine import Context, run
    from cosam.io import write_csv
    from cosam.report import data_label, load_run

    ctx = Context()
    rec = load_run(run(nb.config_for(params, method, int(seed)), ctx=ctx))
    label = data_label([rec])
    synthetic = "SYNTHETIC" in label
    feats = gft_features(rec.path, per_domain=per_domain, ctx=ctx)
    spaces = {"GFT query (trained tokens)": feats.queries, "GFT query (random tokens)": feats.queries_random,
              "mean-pooled SAM embedding": feats.pooled}
    result = {name: separation(x, feats.domains, seed=int(seed), perplexity=perplexity) for name, x in spaces.items()}
    scores = [{"features": n, "dim": spaces[n].shape[1], "silhouette (features, cosine)": r["silhouette_features"],
               "silhouette (t-SNE 2-D)": r["silhouette_tsne"]} for n, r in result.items()]
    write_csv(Path(results_dir) / profile / "reports" / "04_tsne_silhouette.csv", scores)
    display(Markdown(f"Data: **{label}**. `{method}` run `{rec.path}`; {len(feats.domains)} test images."))
    display(Markdown(markdown_table([{k: f"{v:.3f}" if isinstance(v, float) else v for k, v in row.items()} for row in scores])))
    """),
    code("""
    fig, axes = plt.subplots(1, len(result), figsize=(4.4 * len(result), 4.2), layout="constrained")
    for ax, (name, r) in zip(axes, result.items()):
        plots.tsne_scatter(r["embedding"], feats.domains, ax=ax, name=f"{name}\\nsilhouette {r['silhouette_features']:.2f}")
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(plots.title("t-SNE of test images, coloured by domain", synthetic));
    """),
    md("## Conclusions"),
    code("""
    s = {n: r["silhouette_features"] for n, r in result.items()}
    t, rnd, pooled = s["GFT query (trained tokens)"], s["GFT query (random tokens)"], s["mean-pooled SAM embedding"]
    lines = [f"- Data: {label}.",
             f"- Silhouette on the true domains (feature space, cosine): trained GFT {t:.3f}, random-token GFT {rnd:.3f}, "
             f"pooled SAM embedding {pooled:.3f} (1 = perfectly separated clusters, 0 = overlapping).",
             f"- The trained GFT query separates the domains {'better' if t > pooled else 'worse'} than the plain pooled "
             f"features ({t - pooled:+.3f}) and {'better' if t > rnd else 'worse'} than the released random tokens ({t - rnd:+.3f})."]
    display(Markdown("\\n".join(lines)))
    """),
]

NOTEBOOKS = {"00_benchmark": BENCHMARK, "01_baselines": BASELINES, "02_moda": MODA, "03_ablations": ABLATIONS,
             "04_tsne": TSNE, "05_zero_shot": ZERO_SHOT}


def build(cells: List[Cell]) -> nbformat.NotebookNode:
    """A notebook whose ``params`` cell carries papermill's ``parameters`` tag."""
    out = []
    for kind, src in cells:
        if kind == "md":
            out.append(new_markdown_cell(src))
        else:
            cell = new_code_cell(src)
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]
            out.append(cell)
    nb = new_notebook(cells=out)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main(out_dir: Path = HERE) -> None:
    """Write every notebook into ``out_dir`` (default: this folder)."""
    for name, cells in NOTEBOOKS.items():
        notebook = build(cells)
        # Stable cell ids, so regenerating an unchanged list gives an identical file.
        for i, cell in enumerate(notebook.cells):
            cell["id"] = f"{name}-{i:02d}"
        nbformat.validate(notebook)
        nbformat.write(notebook, Path(out_dir) / f"{name}.ipynb")
        print(f"wrote {Path(out_dir) / f'{name}.ipynb'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
