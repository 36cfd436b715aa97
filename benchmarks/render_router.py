"""The router evaluation's regions of README.md and benchmarks/README.md (used by ``render_docs.py``).

Every renderer takes ``render_docs.Sources`` and writes figures only from the committed reports:
``benchmarks/plots/report.json|md`` (``adaptive-ttc evaluate`` with the default router and ``--workflows``),
``benchmarks/results/router_loso*/`` (``--leave-one-source-out``), ``benchmarks/results/router_hidden/`` (the
hidden-state router) and the default router's ``meta.json``. Verdicts ("met", "missed") are computed from the
intervals, so they change with the figures.
"""

from __future__ import annotations

import re
from typing import Any

LOSO = "benchmarks/results/router_loso"
LOSO_HIDDEN = "benchmarks/results/router_loso_hidden"
HIDDEN = "benchmarks/results/router_hidden"
POOLED = "benchmarks/results/router_pooled"
LOSO_POOLED = "benchmarks/results/router_loso_pooled"
GOAL_FACTORS = ("2", "4", "8")
ORACLE_GOAL = 0.9


def _cell(summary: dict[str, Any], fmt: str = "{:+.3f}", ci: str = "", *, bold: bool = False) -> str:
    """``value [low, high]``; with ``ci`` the interval is in parentheses after that prefix."""
    low, high = summary["ci95"]
    value = f"**{fmt.format(summary['value'])}**" if bold else fmt.format(summary["value"])
    interval = f"[{fmt.format(low)}, {fmt.format(high)}]"
    return f"{value} ({ci}{interval})" if ci else f"{value} {interval}"


def _name(label: str) -> str:
    return label.replace("bon-majority-", "best-of-")


def _pooled(src: Any, path: str = LOSO) -> dict[str, Any]:
    pooled: dict[str, Any] = src.json(f"{path}/report.json")["leave_one_source_out"]["pooled"]
    return pooled


def _demote(text: str, levels: int) -> str:
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + levels) + " ", text, flags=re.M)


def _versus_static(summary: dict[str, Any]) -> str:
    """A goal 'router >= best static' judged on the point and the paired interval."""
    low, high = summary["ci95"]
    if low > 0:
        return "met, the interval above 0"
    if summary["value"] >= 0:
        return "met on the point, the interval spanning 0"
    return "missed, the interval below 0" if high < 0 else "short on the point, the interval spanning 0"


def _significance(gains: dict[str, dict[str, Any]]) -> str:
    """Which matched budgets' paired intervals lie wholly above or below 0, in words."""
    above = [f"{f}x {where}" for (where, f), e in gains.items() if e["ci95"][0] > 0]
    below = [f"{f}x {where}" for (where, f), e in gains.items() if e["ci95"][1] < 0]
    verdict = (
        f"the router is significantly above the best static configuration at {_and(above)}"
        if above
        else "no gain over the best static configuration is established"
    )
    return verdict + (f", and it is significantly below it at {_and(below)}" if below else "")


def headline(src: Any) -> str:
    r, m, pooled = src.report, src.report["matched"], _pooled(src)
    by, loso = m["tokens"]["by_factor"], pooled["tokens"]["by_factor"]
    ci = "95% CI "
    versus = ", ".join(f"{f}x {_cell(by[f]['router - best static'], ci=ci)}" for f in GOAL_FACTORS)
    oracle = ", ".join(f"{f}x {_cell(by[f]['router / oracle'], '{:.0%}', ci)}" for f in GOAL_FACTORS)
    held_out = ", ".join(f"{f}x {_cell(loso[f]['router - best static'], ci=ci)}" for f in GOAL_FACTORS)
    gains = {("in distribution", f): by[f]["router - best static"] for f in GOAL_FACTORS}
    gains |= {("with its source held out", f): loso[f]["router - best static"] for f in GOAL_FACTORS}
    lookup = max(
        abs(by[f]["router"]["accuracy"]["value"] - by[f]["source lookup"]["accuracy"]["value"]) for f in GOAL_FACTORS
    )
    return (
        f"![Accuracy vs tokens on {r['questions']} held-out questions: the adaptive router against every static "
        "configuration and the oracle](benchmarks/plots/frontier_tokens.png)\n\n"
        f"What the evaluation shows today, on {m['test_questions']} held-out questions of the `{r['dataset']}` suite "
        f"(none shares a training question's text) with the embedded {r['model']} and the packaged default router, "
        f"at budgets of 2x, 4x and 8x greedy's mean tokens ({m['tokens']['unit']:.0f} per question): router accuracy "
        f"minus the best static configuration's (chosen in hindsight at each budget) {versus}; router accuracy / "
        f"oracle router accuracy {oracle}. With each source of the suite held out of training in turn "
        f"({pooled['questions']} questions), router minus best static: {held_out}. So, on this model, "
        f"{_significance(gains)}; a per-source lookup of mean accuracy comes within {lookup:.3f} of the router at "
        "those budgets in distribution. Details in "
        "[benchmarks/README.md](benchmarks/README.md#router-evaluation-on-real-generations)."
    )


def calibration(src: Any) -> str:
    c, gate = src.router_meta["meta"]["calibration"], src.router_meta["gate"]
    per = ", ".join(f"{v:.3f} (`{k}`)" for k, v in c["brier_by_configuration"].items())
    return (
        f"**Calibration** on the {c['test_questions']} held-out questions x {len(c['brier_by_configuration'])} "
        f"configurations (`adaptive-ttc train`, kept in the router file): Brier score {c['brier']:.3f} against "
        f"{c['brier_baseline']:.3f} for a features-blind baseline (each configuration's mean training accuracy); per "
        f"configuration {per}. Mean predicted accuracy {c['mean_predicted']:.3f} against {c['mean_observed']:.3f} "
        f"observed (`plots/reliability.png`). {c['held_out_in_domain']:.0%} of the held-out questions are inside "
        f"the router's out-of-domain gate (among its limits: at most {gate['unseen_limit']:.0%} of a question's word "
        "n-grams never seen in training)." + _shrinkage(src.router_meta, c)
    )


def _shrinkage(meta: dict[str, Any], c: dict[str, Any]) -> str:
    """The shrinkage weights of the router file, in words (empty for a file without them)."""
    shrink = meta.get("shrinkage")
    if not shrink:
        return ""
    pairs = [
        (label, w) for label, w in zip(meta["grid"], shrink["weights"], strict=True) if label != shrink["reference"]
    ]
    weights = ", ".join(f"{w:.2f} (`{label}`)" for label, w in pairs)
    level = f"`{shrink['reference']}`'s own accuracy " + ("shrunk too" if shrink.get("level") else "kept")
    return (
        f" These are the shrunk predictions: each configuration's predicted gain over `{shrink['reference']}` is "
        f"blended with the baseline's by a weight on the model that an inner {shrink['inner_folds']} over the "
        f"training questions fits ({shrink['folds']} inner folds, {shrink['inner_questions']} inner held-out "
        f"questions inside their fold's domain; least squares): {weights}; {level}. The predictor alone scores "
        f"{c['brier_unshrunk']:.3f}."
    )


def split(src: Any) -> str:
    s, spread = src.router_meta["meta"]["split"], src.report["spread"]["all"]
    return (
        f"The {spread['questions']} rows hold {spread['questions'] - s['duplicate_texts_dropped']} distinct question "
        "texts (reasoning-gym repeats some easy ones): question texts are deduplicated before the split (the first "
        f"row of each text kept), then split by question, stratified by part, seed {s['seed']}: "
        f"{s['train_questions']} training questions, {len(s['test_ids'])} held out (their ids are in the router file)."
    )


def goals(src: Any) -> str:
    return "\n".join([_loso_goal(src), _in_distribution_goal(src), _own_lambdas(src)])


def _loso_goal(src: Any) -> str:
    pooled = _pooled(src)
    by = pooled["tokens"]["by_factor"]
    verdicts = "; ".join(
        f"{f}x {_cell(by[f]['router - best static'], bold=True)}: {_versus_static(by[f]['router - best static'])}"
        for f in GOAL_FACTORS
    )
    folds = src.json(f"{LOSO}/report.json")["leave_one_source_out"]["folds"]
    outside = {s: fold["questions"] for s, fold in folds.items() if fold["in_domain"] == 0}
    above = [
        f"`{s}` at {f}x ({e['router']['accuracy']['value']:.3f} against {e['best static']['accuracy']['value']:.3f})"
        for s, fold in folds.items()
        for f in GOAL_FACTORS
        if (e := fold["tokens"]["by_factor"][f])["router"]["accuracy"]["value"] > e["best static"]["accuracy"]["value"]
    ]
    top = by[GOAL_FACTORS[-1]]
    return (
        f"- *Leave-one-source-out ({pooled['questions']} pooled questions), router - best static at matched token "
        f"budgets:* {verdicts}. At {GOAL_FACTORS[-1]}x the best static is `{top['best static']['configuration']}` "
        f"({top['best static']['accuracy']['value']:.3f}), the prior reaches {top['prior']['accuracy']['value']:.3f} "
        f"and the router spends {top['router']['cost']['value']:.0f} of {top['budget']:.0f} tokens. "
        f"{len(outside)} held-out sources ({', '.join(f'`{s}`' for s in outside)}, "
        f"{sum(outside.values()) / pooled['questions']:.0%} of the pooled questions) are outside their fold's "
        "domain, so the router prices them with the prior's numbers (as `decide` does). Per fold, the router is "
        f"above the best static configuration at {len(above)} of {len(folds) * len(GOAL_FACTORS)} (fold, budget) "
        f"pairs{': ' + '; '.join(above) if above else ''}."
    )


def _in_distribution_goal(src: Any) -> str:
    m = src.report["matched"]
    by = m["tokens"]["by_factor"]
    shares = ", ".join(f"{f}x {_cell(e['router / oracle'], '{:.1%}', bold=True)}" for f, e in by.items())
    short = [ORACLE_GOAL - by[f]["router / oracle"]["value"] for f in GOAL_FACTORS]
    missed = [f"{f}x" for f, gap in zip(GOAL_FACTORS, short, strict=True) if gap > 0]
    verdict = (
        f"the {ORACLE_GOAL:.0%} goal is missed at {', '.join(missed)} by {100 * min(g for g in short if g > 0):.0f}-"
        f"{100 * max(short):.0f} points"
        if missed
        else f"the {ORACLE_GOAL:.0%} goal is met on the points at {', '.join(f'{f}x' for f in GOAL_FACTORS)}"
    )
    lookup = " / ".join(f"{by[f]['source lookup']['accuracy']['value']:.3f}" for f in GOAL_FACTORS)
    router = " / ".join(f"{by[f]['router']['accuracy']['value']:.3f}" for f in GOAL_FACTORS)
    versus = ", ".join(f"{f}x {_cell(by[f]['router - best static'])}" for f in GOAL_FACTORS)
    oracle = max(e["oracle"]["accuracy"]["value"] for e in by.values())
    return (
        f"- *In-distribution ({m['test_questions']} deduplicated held-out questions), router / oracle:* {shares}: "
        f"{verdict}. The oracle reaches {oracle:.3f}; the source lookup gets {lookup} against the router's {router} "
        f"at {' / '.join(f'{f}x' for f in GOAL_FACTORS)} tokens. Router - best static: {versus}."
    )


def _own_lambdas(src: Any) -> str:
    own = src.report["matched"]["router lambdas"]
    greedy = src.report["statics"]["greedy"]
    choices = ", ".join(f"`{k}` on {v:.0%}" for k, v in own["choices"].items())
    return (
        f"- At its own lambdas ({own['lambdas'][0]:g} per token, {own['lambdas'][1]:g} per second) the router runs "
        f"{choices} of the held-out questions: {_cell(own['accuracy'], '{:.3f}')} with "
        f"{own['tokens']['value']:.0f} mean tokens, against greedy's {greedy['accuracy']:.3f} at "
        f"{greedy['tokens']:.0f}."
    )


def features(src: Any) -> str:
    """Text against hidden-state features (in-process and from a vLLM pooling deployment): calibration,
    in-distribution share of the oracle, LOSO gain."""
    rows = [
        "| features | held-out Brier (features-blind) | in-dist. router / oracle at 2x / 4x / 8x tokens "
        "| LOSO router - best static at 2x / 4x / 8x tokens |",
        "| --- | --- | --- | --- |",
    ]
    pairs = ((src.report, LOSO), (src.json(f"{HIDDEN}/report.json"), LOSO_HIDDEN))
    pairs += ((src.json(f"{POOLED}/report.json"), LOSO_POOLED),)
    for report, loso in pairs:
        c, by = report["calibration"], report["matched"]["tokens"]["by_factor"]
        held_out = _pooled(src, loso)["tokens"]["by_factor"]
        name = src.json(f"{loso}/report.json")["features"]
        if name != report["features"]:
            raise ValueError(f"{loso} used features {name}, its in-distribution report {report['features']}")
        rows.append(
            f"| `{name}` | {c['brier']:.3f} ({c['brier_baseline']:.3f}) "
            f"| {' / '.join(_cell(by[f]['router / oracle'], '{:.1%}') for f in GOAL_FACTORS)} "
            f"| {' / '.join(_cell(held_out[f]['router - best static']) for f in GOAL_FACTORS)} |"
        )
    return "\n".join(rows)


def matched(src: Any) -> str:
    return _demote(src.section("Matched budgets", with_heading=True), 1)


def loso(src: Any) -> str:
    pooled = src.section("Pooled over the folds", path=f"{LOSO}/report.md", with_heading=True)
    folds = src.section("Per fold", path=f"{LOSO}/report.md", with_heading=True)
    return _demote(f"{pooled}\n\n{folds}", 2)


def replay_tables(src: Any) -> str:
    return str(src.section("Held-out replay"))


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _span(low: float, high: float, fmt: str) -> str:
    return fmt.format(low) if fmt.format(low) == fmt.format(high) else f"{fmt.format(low)}-{fmt.format(high)}"


def frontier(src: Any) -> str:
    """Where the router's token frontier runs against greedy, the static configurations and the oracle."""
    curve, statics = src.report["curves"]["tokens"], src.report["statics"]
    router = curve["adaptive router"]
    points = sorted(zip(router["cost"], router["accuracy"], strict=True))
    start_cost, start = points[0]
    dips = [(c, a) for c, a in points if a < start]
    best = max(a for _, a in points)
    at_best = [c for c, a in points if a == best]
    beaten = [
        f"`{label}` ({s['accuracy']:.3f} at {s['tokens']:.0f})"
        for label, s in statics.items()
        if label != "greedy" and s["accuracy"] < best
    ]
    free = router["lambda"].index(min(router["lambda"]))
    oracle = sorted(zip(curve["oracle router"]["cost"], curve["oracle router"]["accuracy"], strict=True))
    oracle_best = max(a for _, a in oracle)
    dip = (
        f", dips below it at {_span(dips[0][0], dips[-1][0], '{:.0f}')} tokens "
        f"({_span(min(a for _, a in dips), max(a for _, a in dips), '{:.3f}')})"
        if dips
        else ""
    )
    return (
        f"The router's curve starts at greedy's point ({start_cost:.0f} tokens, {start:.3f}){dip}, reaches "
        f"{best:.3f} at {_span(min(at_best), max(at_best), '{:.0f}')} tokens"
        f"{', above ' + _and(beaten) if beaten else ''}, and ends at {router['accuracy'][free]:.3f} with "
        f"{router['cost'][free]:.0f} tokens at lambda = {router['lambda'][free]:g}. The oracle reaches "
        f"{oracle_best:.3f} at {min(c for c, a in oracle if a == oracle_best):.0f} tokens."
    )


def workflows(src: Any) -> str:
    w, lambdas = src.report["workflows"], src.router_meta["lambdas"]
    unit = w["unit"]
    lines = [
        f"{w['workflows']} workflows of {w['calls'][0]}-{w['calls'][1]} held-out questions asked one after another; "
        f"token cap = factor x calls x a greedy call's mean tokens ({unit['tokens']:.0f}) and, in the deadline "
        f"setting, deadline = factor x calls x its mean latency ({unit['seconds']:.1f} s); virtual time; the real "
        "`Ledger`, the engine's pacing objects and the router's `choose`. The rivals: fixed lambdas (the router's "
        f"own, {lambdas['tokens']:g} per token and {lambdas['latency']:g} per second, or a token price tuned so "
        "that the router's choices spend the cap per call on the held-out questions' logged tokens), the default "
        "pacing with the number of calls known, and every static configuration; the best of them is picked after "
        "the fact. Differences are paired over workflows (bootstrap 95% intervals); of ceiling = accuracy over the "
        "workflows' hindsight ceiling; late = workflows over the deadline, in brackets those static greedy "
        "finished in time. Every policy's row: `benchmarks/plots/report.md`.",
        "",
        "| setting | factor | best rival | resolved pacing | - best rival | of ceiling | cap used | late "
        "| K unknown: - best rival | default pacing |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for setting, cells in w["settings"].items():
        for factor, cell in cells.items():
            rows = cell["policies"]
            rival, known, unknown = (
                rows[cell["best_rival"]],
                rows["resolved pacing"],
                rows["resolved pacing, K unknown"],
            )
            late = (
                f"{known['deadline_missed']:.1%} ({known['deadline_missed_greedy_fits']})"
                if setting == "deadline"
                else "-"
            )
            lines.append(
                f"| {setting} | {float(factor):g}x | {cell['best_rival']} {rival['accuracy_per_call']:.3f} "
                f"| {known['accuracy_per_call']:.3f} | {_delta(known)} | {known['ceiling_share']:.1%} "
                f"| {known['tokens_used_share']:.2f} | {late} | {_delta(unknown)} "
                f"| {rows['pacing']['accuracy_per_call']:.3f} |"
            )
    return "\n".join(lines)


def _delta(row: dict[str, Any]) -> str:
    low, high = row["delta_rival_ci95"]
    return f"{row['delta_vs_best_rival']:+.3f} [{low:+.3f}, {high:+.3f}]"


def workflows_summary(src: Any) -> str:
    cells = [
        (setting, factor, cell)
        for setting, by in src.report["workflows"]["settings"].items()
        for factor, cell in by.items()
    ]
    known = [(s, f, c["policies"]["resolved pacing"]) for s, f, c in cells]
    above = [f"{s} {float(f):g}x" for s, f, r in known if r["delta_rival_ci95"][0] > 0]
    below = [f"{s} {float(f):g}x" for s, f, r in known if r["delta_rival_ci95"][1] < 0]
    shares = [r["ceiling_share"] for _, _, r in known]
    late = max(r["deadline_missed_greedy_fits"] for s, _, r in known if s == "deadline")
    return (
        f"The resolved pacing (K known) against the best rival: above it, the interval excluding 0, at "
        f"{_and_or_none(above)}; below it at {_and_or_none(below)}; elsewhere within the interval. Its share of the "
        f"hindsight ceiling is {min(shares):.0%}-{max(shares):.0%}; at most {late} of "
        f"{src.report['workflows']['workflows']} workflows over the deadline that static greedy finished in time."
    )


def _and_or_none(items: list[str]) -> str:
    return "none" if not items else ", ".join(items)
