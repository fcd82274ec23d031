"""report.md of a compare run: setup, verdict, headline numbers, answer formats, what kind of gain,
transitions, exposure, figures. Built from summary.json alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from massshift.analysis.gains import gain_sentence
from massshift.analysis.states import MIN_PRIOR
from massshift.report.kinds import constant_lines, control_lines, diversity_lines, gain_lines
from massshift.score.formats import format_line
from massshift.score.schema import STATES


def _formats_md(fm: dict[str, Any] | None, b: str, r: str, summary: dict[str, Any]) -> list[str]:
    """The answer-format section: each model's formats, the format shift next to the knowledge shift."""
    if not fm:
        return []
    sh = fm["shift"]
    acc = summary["gain"]["absolute"]["value"]
    knowledge = "n/a" if acc is None else f"{100 * acc:+.1f} points"
    lines = ["## Answer format", "",
             f"- criterion `{summary['criterion']}`: {fm['criterion_reason']}",
             f"- {format_line(b, fm['base'])}", f"- {format_line(r, fm['rl'])}",
             f"- format shift {b} \u2192 {r}: bare {100 * sh['greedy_bare']:+.1f} points, sentences "
             f"{100 * sh['greedy_sentence']:+.1f}, hedges {100 * sh['greedy_hedge']:+.1f}, empty "
             f"{100 * sh['greedy_empty']:+.1f}, mean length {sh['greedy_mean_words']:+.1f} words; knowledge shift: "
             f"greedy accuracy {knowledge}"]
    if fm.get("prefix"):
        lines.append(f"- answer prefix: {fm['prefix']}")
    if fm.get("match_mode") == "contains":
        lines.append("- matching `contains`: an answer counts when an alias appears in it as a whole-word span, "
                     "has at most max_words words, and names no distractor (another value of the same relation); "
                     "an answer that also names a distractor is wrong (anti-hedging), in scoring and in rewards")
    for label, s in ((b, fm["base"]), (r, fm["rl"])):
        if s.get("warning"):
            lines.append(f"- **warning ({label})**: {s['warning']}")
    return [*lines, ""]


# ----------------------------------------------------------------------------- report.md

def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _est(e: dict[str, Any] | None, fmt: str = "{:.3f}", scale: float = 1.0) -> str:
    if not e or e.get("value") is None:
        return "n/a"
    lo, hi = e["ci"]
    ci = "" if lo is None else f" [{fmt.format(scale * lo)}, {fmt.format(scale * hi)}]"
    return fmt.format(scale * e["value"]) + ci


def verdict(summary: dict[str, Any]) -> str:
    """The answer, built from what the gain is made of (``gain_decomposition``: recall, guess, format,
    acquisition) and any collapse; then where the newly greedy-correct facts were in the base (the
    redistribution share, which counts every gained fact whatever its kind)."""
    red = summary["redistribution"]
    n = red["n_new_greedy"]
    if n == 0:
        return "No fact became greedy-correct."
    where = (f"By state in the base, {red['from_tail']} ({100 * red['from_tail'] / n:.1f}%) of the {n} facts that "
             f"became greedy-correct were tail-correct and {red['from_absent']} ({100 * red['from_absent'] / n:.1f}%) "
             "were absent (the redistribution share counts every one of them, guesses included).")
    decomp = summary.get("gain_decomposition")
    if not decomp:
        return where
    labels = summary["labels"]
    warn = " ".join(f"Warning: {w}." for w in summary.get("collapse_warnings") or ())
    return " ".join(x for x in (gain_sentence(decomp, labels["base"], labels["rl"]), warn, where) if x)


def churn_sentence(summary: dict[str, Any]) -> str:
    """One sentence on facts gained and lost in greedy correctness."""
    ch = summary["churn"]
    g, lost, net = (int(ch[k]["value"]) for k in ("gained", "lost", "net"))
    ci = ch["net"]["ci"]
    ci_text = "" if ci[0] is None else f", {100 * summary['bootstrap']['ci']:.0f}% CI [{ci[0]:+.0f}, {ci[1]:+.0f}]"
    return (f"RL made {g} facts greedy-correct and {lost} facts no longer greedy-correct "
            f"(net {net:+d}{ci_text}); lost facts went to tail-correct {ch['lost_to'][STATES[1]]} "
            f"and absent {ch['lost_to'][STATES[2]]} times.")


def _matrix_md(counts: dict[str, dict[str, int]], base: str, rl: str) -> list[str]:
    lines = [f"| {base} \\ {rl} | " + " | ".join(STATES) + " | total |", "|---" * (len(STATES) + 2) + "|"]
    for b in STATES:
        total = sum(counts[b].values())
        cells = [f"{counts[b][r]} ({_pct(counts[b][r] / total) if total else 'n/a'})" for r in STATES]
        lines.append(f"| {b} | " + " | ".join(cells) + f" | {total} |")
    return lines


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _exposure_md(exp: dict[str, Any] | None, base: str, rl: str) -> list[str]:
    """The exposure table (greedy and tail-correct shares per bucket and criterion) and the never-seen control."""
    if not exp:
        return []
    crits = list(dict.fromkeys(row["criterion"] for row in exp["rows"]))
    cell = {(row["bucket"], row["model"], row["criterion"]): row for row in exp["rows"]}
    what = "exposure count" if exp["kind"] == "exposure" else "popularity quantile"
    head = ["bucket", "n", f"greedy {base}", f"greedy {rl}"] + [f"tail ({c}) {m}" for c in crits for m in (base, rl)]
    lines = [f"## Exposure (state shares by {what})", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for bucket in exp["buckets"]:
        first = cell[(bucket, "base", crits[0])]
        if first["n"] == 0:
            continue
        cells = [bucket, str(first["n"]), _pct(first[STATES[0]]), _pct(cell[(bucket, "rl", crits[0])][STATES[0]])]
        cells += [_pct(cell[(bucket, m, c)][STATES[1]]) for c in crits for m in ("base", "rl")]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    never = exp.get("never_seen")
    if never:
        shares = "; ".join(f"`{c}` {base} {_pct(v['base'])}, {rl} {_pct(v['rl'])}" for c, v in never["tail_share"].items())
        lines += [f"Never-seen control (popularity 0, n = {never['n']}; any tail-correct label here is guessing): "
                  f"labelled tail-correct by {shares}; greedy-correct {base} {_pct(never['greedy_share']['base'])}, "
                  f"{rl} {_pct(never['greedy_share']['rl'])}.", ""]
    if exp.get("n_missing"):
        lines += [f"{exp['n_missing']} facts without popularity are left out of this table.", ""]
    return lines


def render_report(summary: dict[str, Any], config: Any, figures: Sequence[str] = ()) -> str:
    """report.md: setup, headline numbers with CIs, the matrix, the verdict, churn, figures.
    ``config`` is the run's ``compare.CompareConfig`` with its state criterion resolved."""
    b, r = summary["labels"]["base"], summary["labels"]["rl"]
    level = f"{100 * config.stats.ci:.0f}% CI"
    acc, gain, mc = summary["accuracy"], summary["gain"], summary["mcnemar"]
    red, nf = summary["redistribution"], summary["n_nonfinite_logp"]
    lines = [
        f"# Compare: {b} \u2192 {r}", "",
        "## Setup", "",
        f"- facts: {summary['n_facts']}; checkpoints: {', '.join(summary['checkpoints'])} (headline: {r}, the last)",
        f"- state criterion: `{summary['criterion']}`; eps = {summary['eps']:.4g} (n = {config.states.n}, alpha = {config.states.alpha}"
        + (f", eps given = {config.states.eps}" if config.states.eps is not None else ", eps = -ln(alpha)/n") + ")"
        + (f"; chance: gold in the top {config.states.chance_top:g} of gold + distractors and >= {config.states.chance_ratio:g} x "
           "the median distractor's probability, and above " + f"{config.states.chance_specificity:g} of the same value's "
           "scores on other subjects' prompts (value-prior test, where at least " + f"{MIN_PRIOR} exist)"
           if summary["criterion"] == "chance" else ""),
        f"- paired bootstrap: {config.stats.n_boot} resamples, seed {config.stats.seed}; intervals are {level}",
        f"- non-finite log p(gold) (kept, counted, never in log-prob medians): {b} {nf['base']}, {r} {nf['rl']}",
        "", "## Verdict", "", verdict(summary), "", churn_sentence(summary), "",
        f"## Headline numbers ({level} in brackets)", "",
        f"- greedy accuracy: {b} {_est(acc['base'])}, {r} {_est(acc['rl'])}",
        f"- gain: absolute {_est(gain['absolute'], '{:+.1f}', 100)} points; relative {_est(gain['relative'], '{:+.1f}', 100)}%",
        f"- McNemar exact test: b = {mc['b']} ({b} only), c = {mc['c']} ({r} only), p = {mc['p_value']:.3g}",
        f"- redistribution share (tail-correct in {b}, `{red['criterion']}`): {_est(red['share_tail'])}",
    ]
    samp = summary["redistribution_by_criterion"].get("sampling")
    if samp is not None:
        lines.append(f"- redistribution share under `sampling`: {_est(samp['share_tail'])} "
                     f"({samp['from_tail']} of {samp['n_new_greedy']})")
    if summary.get("agreement"):
        lines.append(f"- agreement of the logprob and sampling states: {b} {_pct(summary['agreement']['base'])}, "
                     f"{r} {_pct(summary['agreement']['rl'])}")
    pairs = summary.get("agreement_pairwise") or {}
    for pair in (pairs.get("base") or {}):
        if pair != "logprob~sampling":
            lines.append(f"- agreement of the {pair.replace('~', ' and ')} states: {b} {_pct(pairs['base'][pair])}, "
                         f"{r} {_pct(pairs['rl'][pair])}")
    ch = summary.get("chance")
    if ch:
        lines.append(f"- distractors: mean K_q {b} {_num(ch['base']['k_q_mean'])}, {r} {_num(ch['rl']['k_q_mean'])}; "
                     f"gold ranked first {b} {_pct(ch['base']['share_gold_first'])}, "
                     f"{r} {_pct(ch['rl']['share_gold_first'])}; {ch['base']['n_distractors_mean']:.1f} distractors "
                     f"per fact, {ch['base']['n_without_distractors']} facts without any")
    for state, s in summary["logp_shift"].items():
        lines.append(f"- median \u0394 log p(gold), {b} {state}: {_est(s['median'])} (n = {s['n']}, "
                     f"{s['n_nonfinite']} non-finite)")
    if summary.get("entropy"):
        e = summary["entropy"]
        lines.append(f"- answer entropy (nats): {b} {_est(e['base'])}, {r} {_est(e['rl'])}, change {_est(e['change'])}")
    if summary.get("pass_at_k"):
        lines.append(f"- pass@k crossing (first k where {b} catches up): {summary['pass_at_k']['crossing_k']}")
    for crit, sup in summary["support"].items():
        if sup is not None:
            ratios = ", ".join(f"{k} {'n/a' if sup[k] is None else f'{sup[k]:.3f}'}" for k in ("SRR", "NDR", "SDS", "NSCR"))
            lines.append(f"- support ({crit}): P {sup['P']}, S {sup['S']}, E {sup['E']}, O {sup['O']}; {ratios}")
    lines += ["", f"## Transitions ({summary['criterion']}; count and row share)", "",
              *_matrix_md(summary["transitions"], b, r), ""]
    lines += gain_lines(summary.get("gain_decomposition"), r)
    lines += constant_lines(summary.get("constant_baseline"), acc, b, r)
    lines += diversity_lines(summary.get("diversity"), summary.get("collapse_warnings") or ())
    lines += control_lines(summary.get("controls"))
    lines += _formats_md(summary.get("formats"), b, r, summary)
    lines += _exposure_md(summary.get("exposure"), b, r)
    if figures:
        lines += ["## Figures", "", *[f"- [{name}](figures/{name}.png) ([pdf](figures/{name}.pdf))" for name in figures], ""]
    return "\n".join(lines)
