"""The report: the acceptance ratios of the kernel and model-layer issues, bench.md
(Markdown tables, one section a suite) and the PNG plots of the scaling sweeps."""

from __future__ import annotations

from pathlib import Path

from .model_cases import AUTOCAST


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


class _Checks(list):
    """The rows of the acceptance table: check, value, target and whether it is met
    (None where the value could not be measured)."""

    def add(self, name: str, value: float | None, target: str, holds) -> None:
        met = None if value is None else bool(holds(value))
        self.append({"check": name, "value": value, "target": target, "met": met})


def acceptance(results: dict) -> list[dict]:
    """The acceptance ratios of the kernel and model-layer issues found in ``results``."""
    checks = _Checks()
    _op_checks(results.get("ops", {}), checks)
    _train_checks(results.get("train", {}), checks)
    _impute_checks(results.get("impute", {}), checks)
    op_mem = results.get("sweep", {}).get("iw_impute_memory")
    if op_mem and op_mem["K"] == 100000:
        checks.add(
            "iw_impute B=64 K=100,000 D=64: peak extra memory beyond its inputs (MB)",
            op_mem["peak_mb"]["fused"],
            "< 100 MB",
            lambda v: v < 100,
        )
    return list(checks)


def _op_checks(ops: dict, checks: _Checks) -> None:
    for row in ops.get("cases", []):
        if row["op"] != "notmiwae_normal_terms":
            continue
        t = row["time_s"]
        speed = _ratio(t["eager"]["median"], t["fused"]["median"])
        if row["shape"] == "image-B16":
            checks.add(
                "notmiwae_normal_terms fwd+bwd B=16 K=20 D=12288: speed-up vs eager",
                speed,
                "≥ 3×",
                lambda v: v >= 3,
            )
            mem = row.get("peak_mb", {})
            checks.add(
                "  … its peak extra memory as a fraction of eager's",
                _ratio(mem.get("fused"), mem.get("eager")),
                "≤ 1/3",
                lambda v: v <= 1 / 3,
            )
            if "compile" in t:
                checks.add(
                    "  … speed-up vs torch.compile of the reference (aim: not slower)",
                    _ratio(t["compile"]["median"], t["fused"]["median"]),
                    "≥ 1× (aim)",
                    lambda v: v >= 1,
                )
        if row["shape"] == "tabular-B128":
            checks.add(
                "notmiwae_normal_terms fwd+bwd B=128 K=20 D=11: speed-up vs eager",
                speed,
                "≥ 2×",
                lambda v: v >= 2,
            )


def _train_checks(train: dict, checks: _Checks) -> None:
    for case in train.get("cases", []):
        t = case["time_s"]
        if "notmiwae_pytorch" in t and case["case"].startswith("tabular"):
            target = 3 if case["batch"] == 16 else 2
            checks.add(
                f"training step batch {case['batch']}: speed-up vs notmiwae-pytorch",
                _ratio(t["notmiwae_pytorch"]["median"], t["fused"]["median"]),
                f"≥ {target}×",
                lambda v, target=target: v >= target,
            )


def _impute_checks(imp: dict, checks: _Checks) -> None:
    for case in imp.get("cases", []):
        r = case["rows_per_s"]
        if case["K"] == 1000 and "notmiwae_pytorch" in r:
            checks.add(
                f"imputation rows/s, {case['rows']} rows, D=11, K=1000: vs notmiwae-pytorch",
                _ratio(r["fused"], r["notmiwae_pytorch"]),
                "≥ 5×",
                lambda v: v >= 5,
            )
            if AUTOCAST in r:
                checks.add(
                    "  … the same under torch.autocast (reduced-precision matrix products; "
                    "not the float32 comparison)",
                    _ratio(r[AUTOCAST], r["notmiwae_pytorch"]),
                    "≥ 5×",
                    lambda v: v >= 5,
                )
    mem = imp.get("memory", {})
    if "notmiwae_pytorch" in mem.get("peak_mb", {}):
        p = mem["peak_mb"]
        checks.add(
            f"imputation peak memory D={mem['D']} K=1000: notmiwae-pytorch / fused",
            _ratio(p["notmiwae_pytorch"], max(p["fused"] or 0.0, 1.0)),
            "≥ 5×",
            lambda v: v >= 5,
        )


def _mb_list(peaks: dict) -> str:
    """'fused 12 MB, eager 30 MB' ('–' where a measurement failed)."""
    return ", ".join(
        f"{name} {'–' if mb is None else f'{mb:.0f} MB'}" for name, mb in peaks.items()
    )


def _fmt_t(s: dict, scale: float = 1e3) -> str:
    return f"{s['median'] * scale:.3g} [{s['q1'] * scale:.3g}–{s['q3'] * scale:.3g}]"


def markdown(report: dict) -> str:
    """bench.md: the machine, the acceptance ratios and a table for each suite run."""
    res = report["results"]
    lines = _md_header(report) + _md_acceptance(report.get("acceptance", []))
    if "ops" in res:
        lines += _md_ops(res["ops"], report["machine"])
    if "train" in res:
        lines += _md_train(res["train"])
    if "impute" in res:
        lines += _md_impute(res["impute"])
    if "sweep" in res:
        lines += _md_sweep(res["sweep"])
    return "\n".join(lines)


def _md_header(report: dict) -> list[str]:
    m = report["machine"]
    where = (
        f"{m['gpu']} (CUDA {m['cuda']}, copy bandwidth {m['copy_bandwidth_gbs']:.0f} GB/s)"
        if m["device"] == "cuda"
        else f"{m['cpu']}, {m['cores']} cores"
    )
    return [
        f"# notmiwae-fast bench ({m['device']}{', quick' if report['quick'] else ''})",
        "",
        (
            f"{where}; {m['threads']} threads; torch {m['torch']}; notmiwae_fast "
            f"{m['notmiwae_fast']} (commit {(m['git_commit'] or 'unknown')[:10]}); "
            f"notmiwae-pytorch: {m['notmiwae_pytorch'] or 'not installed (its columns absent)'}. "
            "Times: median [inter-quartile range] in ms; ratios from medians measured in "
            "the same run."
        ),
        "",
    ]


def _md_acceptance(checks: list[dict]) -> list[str]:
    if not checks:
        return []
    lines = ["## Acceptance ratios", "", "| check | measured | target | met |", "|---|---|---|---|"]
    for c in checks:
        # three decimals below 10: a ratio of 1.997 must not read as 2
        value = (
            "–"
            if c["value"] is None
            else f"{c['value']:.3f}"
            if abs(c["value"]) < 10
            else f"{c['value']:.3g}"
        )
        met = {True: "✓", False: "✗", None: "–"}[c["met"]]
        lines.append(f"| {c['check']} | {value} | {c['target']} | {met} |")
    lines.append("")
    return lines


def _md_ops(ops: dict, m: dict) -> list[str]:
    cuda = m["device"] == "cuda"
    lines = [
        "## Ops, forward + backward (float32)",
        "",
        (
            "| op | shape | fused ms | eager ms | compile ms | vs eager | vs compile "
            "| peak MB fused / eager |"
        )
        + (" fwd GB/s | of copy bw |" if cuda else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|---|" if cuda else ""),
    ]
    for r in ops["cases"]:
        t = r["time_s"]
        comp = _fmt_t(t["compile"]) if "compile" in t else "–"
        vs_c = f"{t['compile']['median'] / t['fused']['median']:.2f}×" if "compile" in t else "–"
        mem = r.get("peak_mb")
        mem_s = (
            f"{mem['fused']:.0f} / {mem['eager']:.0f}" if mem and None not in mem.values() else "–"
        )
        row = (
            f"| {r['op']} | {r['shape']} | {_fmt_t(t['fused'])} | {_fmt_t(t['eager'])} | "
            f"{comp} | {t['eager']['median'] / t['fused']['median']:.2f}× | {vs_c} | "
            f"{mem_s} |"
        )
        if cuda:
            gbs = r["forward_bytes"] / r["forward_s"]["median"] / 1e9
            row += f" {gbs:.0f} | {gbs / m['copy_bandwidth_gbs']:.0%} |"
        lines.append(row)
    lines.append("")
    return lines


def _md_train(train: dict) -> list[str]:
    lines = [
        ("## Training step (forward, backward, Adam): not-MIWAE self-masking, hidden 128, K = 20"),
        "",
        "| case | implementation | ms/step | steps/s | rows/s | fused speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for c in train["cases"]:
        f = c["time_s"]["fused"]["median"]
        for i, t in c["time_s"].items():
            lines.append(
                f"| {c['case']} | {i} | {_fmt_t(t)} | {c['steps_per_s'][i]:.1f} | "
                f"{c['rows_per_s'][i]:.0f} | {t['median'] / f:.2f}× |"
            )
    lines.append("")
    return lines


def _md_impute(imp: dict) -> list[str]:
    lines = [
        "## Imputation",
        "",
        "| case | implementation | rows/s | fused speed-up |",
        "|---|---|---|---|",
    ]
    for c in imp["cases"]:
        f = c["rows_per_s"]["fused"]
        for i, r in c["rows_per_s"].items():
            lines.append(
                f"| {c['rows']} rows, D = {c['D']}, K = {c['K']} | {i} | {r:.0f} | {f / r:.2f}× |"
            )
    err = imp.get("autocast_error")
    if err:
        lines += [
            "",
            (
                f"{AUTOCAST}: `torch.autocast` with {err['dtype']}; its imputations "
                f"differ from float32's by at most {err['max_abs_diff']:.4f} (mean "
                f"{err['mean_abs_diff']:.5f}) on the missing entries (standard-normal "
                f"data); RMSE against the true values {err['rmse_autocast']:.4f} vs "
                f"{err['rmse_float32']:.4f} in float32."
            ),
        ]
    mem = imp["memory"]
    lines += [
        "",
        f"Peak extra memory imputing {mem['rows']} rows of D = {mem['D']} with "
        f"K = {mem['K']}: " + _mb_list(mem["peak_mb"]) + ".",
        "",
        f"impute_image, {imp['image']['side']}² RGB, K = 20: "
        + ", ".join(
            f"{i} {v:.3f} megapixels/s" for i, v in imp["image"]["megapixels_per_s"].items()
        )
        + ".",
        "",
    ]
    return lines


def _md_sweep(sw: dict) -> list[str]:
    lines = [
        "## Scaling sweeps (fused)",
        "",
        (
            f"Base shape B, K, D = {sw['base']['B']}, {sw['base']['K']}, "
            f"{sw['base']['D']}; one axis varied at a time (plot: scaling.png)."
        ),
        "",
        "| op | axis | B·K·D | ms |",
        "|---|---|---|---|",
    ]
    for p in sw["points"]:
        lines.append(
            f"| {p['op']} | {p['axis']} = {p[p['axis']]} | {p['BKD']} | {_fmt_t(p['time_s'])} |"
        )
    om = sw["iw_impute_memory"]
    lines += [
        "",
        f"iw_impute forward, B = {om['B']}, K = {om['K']}, D = {om['D']}: peak "
        "extra memory beyond its inputs " + _mb_list(om["peak_mb"]) + ".",
    ]
    lines += [
        "",
        "model.impute peak extra memory against K (64 rows, D = 64; plot: "
        "memory_vs_k.png): "
        + "; ".join(f"K = {x['K']}: " + _mb_list(x["peak_mb"]) for x in sw["impute_memory"])
        + ".",
        "",
    ]
    return lines


def plots(report: dict, out_dir: Path) -> list[str]:
    """Log-log plots of the sweeps; none when matplotlib is missing."""
    sw = report["results"].get("sweep")
    if sw is None:
        return []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(str(out_dir / name))

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, op in zip(axes, ("notmiwae_normal_terms", "iw_impute")):
        for axis, marker in zip("BKD", "os^"):
            pts = [p for p in sw["points"] if p["op"] == op and p["axis"] == axis]
            ax.loglog(
                [p["BKD"] for p in pts],
                [1e3 * p["time_s"]["median"] for p in pts],
                marker=marker,
                label=f"vary {axis}",
            )
        lo = min(p["BKD"] for p in sw["points"])
        hi = max(p["BKD"] for p in sw["points"])
        ref = [p for p in sw["points"] if p["op"] == op]
        t_hi = max(1e3 * p["time_s"]["median"] for p in ref)
        ax.loglog([lo, hi], [t_hi * lo / hi, t_hi], "k:", label="∝ B·K·D")
        ax.set(title=f"{op} (fused, fwd+bwd)", xlabel="B·K·D", ylabel="ms")
        ax.legend()
    save(fig, "scaling.png")
    fig, ax = plt.subplots(figsize=(5, 4))
    for impl in ("fused", "reference"):
        pts = [(x["K"], x["peak_mb"].get(impl)) for x in sw["impute_memory"]]
        pts = [(k, max(v, 0.5)) for k, v in pts if v is not None]
        if pts:
            ax.loglog(*zip(*pts), marker="o", label=impl)
    ax.set(
        title="model.impute peak extra memory",
        xlabel="K (importance samples)",
        ylabel="MB (floor 0.5)",
    )
    ax.legend()
    save(fig, "memory_vs_k.png")
    return written
