"""report.md of `softlabels inspect`: the key numbers and advice, in words."""

from __future__ import annotations

CAPTIONS = {
    "accuracy.png": "Accuracy per class",
    "confusion.png": "Confusion matrix",
    "confidence.png": "Confidence and entropy",
    "calibration.png": "Calibration and temperature",
    "temperature.png": "Soft targets by temperature",
    "views.png": "Agreement between views",
    "predictions.png": "Predicted classes and confidence",
    "embedding.png": "Embeddings (PCA) and their norms",
}


def render_markdown(report: dict) -> str:
    """report.md: the numbers that matter in one table, what they suggest, then the plots."""
    if "accuracy" not in report:  # an unlabelled cache, or one of embeddings alone
        return _render_unscored(report)
    lines = [f"# Teacher report: {report['name']}", "", _scope(report), "", "| | |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in _key_numbers(report) + _embedding_numbers(report)]
    if report.get("members"):
        members = report["members"]
        lines += ["", "## Teachers", "", "| teacher | accuracy | NLL (T=1) | ECE (T=1) |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {m['name']} | {m['accuracy']:.2%} | {m['nll']:.3f} | {m['ece']:.2%} |" for m in members["teachers"]
        ]
        lines += [
            f"| ensemble (mean-prob) | {members['ensemble_accuracy']:.2%} | | |",
            "",
            "Top-1 agreement between teachers: "
            + "; ".join(
                f"{a['name']} / {b['name']} {members['agreement'][i][j]:.1%}"
                for i, a in enumerate(members["teachers"])
                for j, b in enumerate(members["teachers"])
                if j > i
            ),
        ]
    lines += ["", "## What this suggests", ""] + [f"- {text}" for text in _advice(report)]
    captions = CAPTIONS
    for name in report.get("plots", []):
        lines += ["", f"## {captions.get(name, name)}", "", f"![{captions.get(name, name)}]({name})"]
        if name == "confusion.png" and report["accuracy"]["top_confusions"]:
            lines += [
                "",
                "| true class | predicted as | predictions | share of the class |",
                "| --- | --- | --- | --- |",
            ]
            lines += [
                f"| {c['true']} | {c['predicted']} | {c['count']} | {c['fraction_of_true']:.1%} |"
                for c in report["accuracy"]["top_confusions"]
            ]
    return "\n".join(lines) + "\n"


def _render_unscored(report: dict) -> str:
    """report.md of a cache the teacher cannot be scored on (no labels, or no logits)."""
    lines = [f"# Teacher report: {report['name']}", "", _scope(report), ""]
    if not report["labelled"]:
        lines += ["No labels: accuracy needs a labelled cache. What the teacher's outputs say on their own:", ""]
    rows = _embedding_numbers(report)
    predictions = report.get("predictions")
    if predictions:
        counts = predictions["predicted_classes"]
        top = sorted(counts, key=lambda name: -counts[name])[:5]
        rows = [
            ("mean confidence (T = 1)", f"{predictions['confidence']['mean']:.3f}"),
            (
                "mean entropy (nats)",
                f"{predictions['entropy']['mean']:.3f} ({predictions['entropy']['fraction_of_max']:.0%} of max)",
            ),
            (
                "most predicted classes",
                ", ".join(f"{name} {counts[name] / max(predictions['predictions'], 1):.1%}" for name in top),
            ),
            (
                "target entropy (nats)",
                ", ".join(f"T = {t['temperature']:g}: {t['entropy_mean']:.3f}" for t in predictions["temperatures"]),
            ),
            *rows,
        ]
    lines += ["| | |", "| --- | --- |", *(f"| {name} | {value} |" for name, value in rows)]
    for name in report.get("plots", []):
        lines += ["", f"## {CAPTIONS.get(name, name)}", "", f"![{CAPTIONS.get(name, name)}]({name})"]
    return "\n".join(lines) + "\n"


def _embedding_numbers(report: dict) -> list[tuple[str, str]]:
    embedding = report.get("embedding")
    if not embedding:
        return []
    norm = embedding["norm"]
    rows = [
        ("embedding dimension", str(embedding["dimension"])),
        (
            "embedding norm",
            f"mean {norm['mean']:.3g}, std {norm['std']:.3g}, range {norm['min']:.3g} - {norm['max']:.3g}",
        ),
        (
            "variance in 2 / 10 principal components",
            f"{embedding['pca']['explained_2']:.1%} / {embedding['pca']['explained_10']:.1%}",
        ),
    ]
    if "probe_knn" in embedding:
        rows += [
            (f"k-NN probe ({embedding['features']})", f"{embedding['probe_knn']:.2%}"),
            (f"linear probe ({embedding['features']})", f"{embedding['probe_linear']:.2%}"),
        ]
    else:
        rows.append(("probes of the embeddings", embedding["probes"]))
    return rows


def _scope(report: dict) -> str:
    used = report["samples_used"]
    sampled = (
        "all samples" if used == report["num_samples"] else f"{used} evenly spaced samples of {report['num_samples']}"
    )
    return (
        f"Teacher {report['teacher']} on {report['dataset']} / {report['split']}: {report['num_samples']} samples "
        f"x {report['num_views']} view(s), {len(report['classes'])} classes, {report['storage']}. "
        f"Statistics over {sampled}, every view counted as one prediction."
    )


def _key_numbers(report: dict) -> list[tuple[str, str]]:
    acc, conf, cal = report["accuracy"], report["confidence"], report["calibration"]
    per_class = {k: v for k, v in acc["per_class"].items() if v is not None}
    worst = min(per_class, key=lambda name: per_class[name])
    best = max(per_class, key=lambda name: per_class[name])
    temps = report["temperatures"]
    probes = report.get("probes") or {}
    rows = [
        ("accuracy", f"{acc['accuracy']:.2%} (view 0: {acc['view0']:.2%})"),
        *(
            (f"{name.replace('_', ' ')} ({probes['features']})", f"{value:.2%}")
            for name, value in probes.items()
            if name.startswith("probe_")
        ),
        (
            "worst / best class",
            f"{worst} {per_class[worst]:.1%} / {best} {per_class[best]:.1%}",
        ),
        (
            "mean confidence",
            f"{conf['mean']:.3f} (right: {_fmt(conf['mean_correct'])}, wrong: {_fmt(conf['mean_wrong'])})",
        ),
        ("calibration at T = 1", f"ECE {cal['at_1']['ece']:.2%}, NLL {cal['at_1']['nll']:.3f}"),
        (
            "best temperature (NLL)",
            f"**T = {cal['fitted']['temperature']:.2f}**"
            + (" (end of the searched range)" if cal["fitted"]["at_limit"] else "")
            + f": ECE {cal['fitted']['ece']:.2%}, NLL {cal['fitted']['nll']:.3f}",
        ),
        (
            "mass in top-" + "/".join(report["coverage"]["mass"]),
            " / ".join(f"{m:.3f}" for m in report["coverage"]["mass"].values()),
        ),
        (
            "target entropy (nats)",
            ", ".join(
                f"T = {t['temperature']:g}: {t['entropy_mean']:.3f} ({t['entropy_fraction_of_max']:.0%} of max)"
                for t in temps
            ),
        ),
    ]
    if report["views"]:
        views = report["views"]
        rows.append(
            (
                "views agreeing with view 0",
                f"{views['agree_with_view0']:.1%} (all agree on "
                f"{views['all_views_agree']:.1%} of samples; mean pairwise KL {views['mean_pairwise_kl']:.4f} nats)",
            )
        )
    return rows


def _advice(report: dict) -> list[str]:
    fitted = report["calibration"]["fitted"]["temperature"]
    at_1 = report["calibration"]["at_1"]
    limit = report["calibration"]["fitted"]["at_limit"]
    if limit == "upper":
        calibration = (
            f"The NLL keeps falling up to T = {fitted:.0f}: a near-uniform guess predicts these labels as "
            f"well as the teacher does. It knows little about this split; distilling it is unlikely to help."
        )
    elif limit == "lower":
        calibration = (
            f"The NLL keeps falling down to T = {fitted:.2f}: the teacher is right on (almost) every sample "
            f"of this split, so calibration cannot pick a temperature here; use a held-out split."
        )
    elif fitted > 1.1:
        calibration = (
            f"Over-confident at T = 1 (ECE {at_1['ece']:.1%}): its probabilities are honest at "
            f"T = {fitted:.2f}. Soft targets at about that temperature carry its real uncertainty."
        )
    elif fitted < 0.9:
        calibration = (
            f"Under-confident at T = 1 (ECE {at_1['ece']:.1%}): its probabilities are honest at "
            f"T = {fitted:.2f}, i.e. sharper than its raw outputs."
        )
    else:
        calibration = f"Well calibrated at T = 1 (fitted T = {fitted:.2f}, ECE {at_1['ece']:.1%})."
    advice = [
        calibration,
        "Calibration is measured on this split. If the teacher was trained on it, it looks more accurate "
        "and confident here than on new data: inspect a cache of a held-out split to choose T.",
    ]
    outside = ", ".join(
        f"{1 - t['max_probability_mean']:.1%} at T = {t['temperature']:g}" for t in report["temperatures"]
    )
    uniform = [f"{t['temperature']:g}" for t in report["temperatures"] if t["entropy_fraction_of_max"] > 0.8]
    advice.append(
        f"Mass the soft targets put outside the top class (what distillation adds to labels), on average: "
        f"{outside}." + (f" At T = {', '.join(uniform)} they are close to uniform." if uniform else "")
    )
    if report["topk"]:
        advice.append(
            f"Top-{report['topk']} storage: probabilities beyond the {report['topk']} stored classes are "
            f"approximated (the tail mass is exact, split evenly), so entropies and masses past "
            f"top-{report['topk']} are estimates."
        )
    if report["views"]:
        views = report["views"]
        advice.append(
            f"Views disagree with view 0 on {1 - views['agree_with_view0']:.1%} of predictions, with a mean "
            f"pairwise KL of {views['mean_pairwise_kl']:.3f} nats: how much the targets depend on the view "
            f"(majority vote accuracy {views['majority_vote_accuracy']:.1%})."
        )
    return advice


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
