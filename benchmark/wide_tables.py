"""``table.csv`` in the paper's wide layout: ``table.md``, ``table.tex`` and ``table.html``.

Methods are rows; columns are (dataset/task, protocol, fraction); a cell is
``value [ci_low, ci_high]``. One block per metric (AUC first, then balanced accuracy,
then RSNA's breast-level AUC). The best value of each column is bold; "best" is the
highest point estimate, which says nothing about significance (see the delta columns
and p-values in table.csv for that).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.metrics import METRICS
from benchmark.protocols import PROTOCOLS, cell_order
from benchmark.tables import CHANCE_NOTE, NOT_TRAINED_HERE

CHANCE_MARK = "°"
EXTERNAL_MARK = "ext"
# (note in table.csv, mark after the model's name, footnote)
MARKS = [(CHANCE_NOTE, CHANCE_MARK, f"{CHANCE_MARK} {CHANCE_NOTE} on its image-text loss (budget.csv; the rows' "
          "note in table.csv gives the values): it learned little of its pretraining task"),
         (NOT_TRAINED_HERE, EXTERNAL_MARK, f"{EXTERNAL_MARK}: {NOT_TRAINED_HERE} (evaluated only; outside the primary "
          "comparisons)")]


def _marks(table: pd.DataFrame) -> tuple[dict[str, str], list[str]]:
    """Each model's marks (its rows' notes) and the footnotes of the marks in use."""
    notes = table["note"].fillna("").astype(str)
    marks: dict[str, str] = {}
    footnotes = []
    for note, mark, footnote in MARKS:
        models = sorted(set(table.loc[notes.str.contains(note, regex=False), "model"]))
        for model in models:
            marks[model] = f"{marks.get(model, '')} {mark}"
        footnotes += [footnote] if models else []
    return marks, footnotes


def _label(model: str, marks: dict[str, str]) -> str:
    return f"{model}{marks.get(model, '')}"


def _column_name(dataset: str, task: str, protocol: str, fraction: str) -> str:
    name = f"{dataset}/{task} {PROTOCOLS[protocol].short if protocol in PROTOCOLS else protocol}"
    return f"{name} {float(fraction) * 100:g}%" if fraction not in ("", None) and pd.notna(fraction) else name


def _cells(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(column name, that column's rows by model), columns in reading order."""
    keys = sorted({(r.dataset, r.task, r.protocol, r.fraction) for r in rows.itertuples()},
                  key=lambda k: (k[0], k[1], *cell_order(k[2], k[3])))
    return [(_column_name(*k), rows[(rows.dataset == k[0]) & (rows.task == k[1]) & (rows.protocol == k[2])
                                    & (rows.fraction == k[3])].set_index("model")) for k in keys]


def _delta_text(delta: float, lo: float, hi: float, digits: int, primary_p: float = np.nan) -> str:
    """``+0.012 [-0.030, 0.051]`` (method level); * when that interval excludes 0, † when the
    comparison is primary and its Holm-adjusted p-value is below 0.05."""
    mark = "*" if (lo > 0 or hi < 0) else ""
    mark += "†" if pd.notna(primary_p) and primary_p < 0.05 else ""
    return f"{delta:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]{mark}"


def wide_blocks(table: pd.DataFrame, digits: int = 3) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """[(title, cells as text, bold mask)] per metric present, rows in table order of models:
    the values, then (where the table has a reference model) the differences from it."""
    table = table.assign(fraction=table["fraction"].fillna("").astype(str))
    models = list(dict.fromkeys(table["model"]))
    blocks = []
    for metric, title in [(m.name, m.title) for m in METRICS.values()]:
        rows = table[table["metric"] == metric]
        if rows.empty:
            continue
        cells = _cells(rows)
        text = pd.DataFrame("", index=models, columns=[name for name, _ in cells])
        bold = pd.DataFrame(False, index=models, columns=text.columns)
        deltas = pd.DataFrame("", index=models, columns=text.columns)
        gains = pd.DataFrame("", index=models, columns=text.columns)
        for column, cell in cells:
            for model, r in cell.iterrows():
                text.loc[model, column] = f"{r.value:.{digits}f} [{r.ci_low:.{digits}f}, {r.ci_high:.{digits}f}]"
                if pd.notna(r.get("delta_vs_control", np.nan)):
                    gains.loc[model, column] = _delta_text(r.delta_vs_control, r.control_delta_ci_low,
                                                           r.control_delta_ci_high, digits)
                if pd.notna(r.delta_vs_ref):
                    deltas.loc[model, column] = _delta_text(r.delta_vs_ref, r.method_delta_ci_low,
                                                            r.method_delta_ci_high, digits, r.p_adjusted)
                elif cell["delta_vs_ref"].notna().any():
                    deltas.loc[model, column] = "reference"
            if cell["value"].notna().any():
                best = np.round(cell["value"], digits) == np.round(cell["value"].max(), digits)
                bold.loc[best[best].index, column] = True
        blocks.append((title, text, bold))
        if (deltas != "").any(axis=None):
            blocks.append((f"{title}: difference from the reference, method level (* interval excludes 0, "
                           "† primary comparison significant after Holm)", deltas,
                           pd.DataFrame(False, index=models, columns=text.columns)))
        if (gains != "").any(axis=None):
            trained = gains.index[(gains != "").any(axis=1)]
            blocks.append((f"{title}: gain over the model's own untrained architecture, method level "
                           "(* interval excludes 0)", gains.loc[trained],
                           pd.DataFrame(False, index=trained, columns=text.columns)))
    return blocks


def to_markdown(table: pd.DataFrame) -> str:
    parts = ["# Results\n", "value [95 % CI] from the patient bootstrap; best per column in bold. Each metric is\n"
             "followed by the differences from the reference model with their method-level intervals.\n"]
    flagged, footnotes = _marks(table)
    parts += [f"\n{footnote}.\n" for footnote in footnotes]
    for title, text, bold in wide_blocks(table):
        parts.append(f"\n## {title}\n\n")
        parts.append("| model | " + " | ".join(text.columns) + " |\n")
        parts.append("| --- |" + " ---: |" * len(text.columns) + "\n")
        for model in text.index:
            cells = [f"**{c}**" if b and c else c for c, b in zip(text.loc[model], bold.loc[model])]
            parts.append(f"| {_label(model, flagged)} | " + " | ".join(cells) + " |\n")
    return "".join(parts)


def _tex_escape(s: str) -> str:
    return s.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace("†", r"$^\dagger$")


def to_latex(table: pd.DataFrame) -> str:
    """One tabular per metric (booktabs); ``\\usepackage{booktabs}`` in the preamble."""
    parts = ["% Generated by `python -m benchmark table`; value [95% CI], best per column in bold.\n"]
    flagged, footnotes = _marks(table)
    parts += [f"% {footnote}\n" for footnote in footnotes]
    for title, text, bold in wide_blocks(table):
        parts.append(f"% {title}\n\\begin{{tabular}}{{l{'c' * len(text.columns)}}}\n\\toprule\n")
        parts.append("Model & " + " & ".join(_tex_escape(c) for c in text.columns) + " \\\\\n\\midrule\n")
        for model in text.index:
            cells = [f"\\textbf{{{c}}}" if b and c else c for c, b in zip(text.loc[model], bold.loc[model])]
            parts.append(_tex_escape(_label(model, flagged)).replace(CHANCE_MARK, r"$^\circ$") + " & "
                         + " & ".join(cells) + " \\\\\n")
        parts.append("\\bottomrule\n\\end{tabular}\n\n")
    return "".join(parts)


HTML_STYLE = """body{font-family:sans-serif;font-size:13px;margin:16px;color:#222}
table{border-collapse:collapse;margin:4px 0 18px}th,td{padding:3px 8px;border-bottom:1px solid #ddd;
text-align:right;white-space:nowrap}th:first-child,td:first-child{text-align:left}thead th{border-bottom:2px solid #444}
h2{font-size:16px;margin:18px 0 4px}h3{font-size:14px;margin:10px 0 2px}"""


def to_html(table: pd.DataFrame) -> str:
    """A standalone page (for the HTML report): per metric, a table per task."""
    from html import escape

    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Results</title>",
             f"<style>{HTML_STYLE}</style></head><body><h1>Results</h1>",
             "<p>value [95 % CI] from the patient bootstrap; best per column in bold (the highest point estimate, "
             "not a significance test: see delta_vs_ref and its interval in table.csv).</p>"]
    flagged, footnotes = _marks(table)
    parts += [f"<p>{escape(footnote)}.</p>" for footnote in footnotes]
    for title, text, bold in wide_blocks(table):
        parts.append(f"<h2>{escape(title)}</h2>")
        tasks = list(dict.fromkeys(c.split(" ")[0] for c in text.columns))
        for task in tasks:
            columns = [c for c in text.columns if c.split(" ")[0] == task]
            parts.append(f"<h3>{escape(task)}</h3><table><thead><tr><th>model</th>")
            parts += [f"<th>{escape(c[len(task) + 1:])}</th>" for c in columns]
            parts.append("</tr></thead><tbody>")
            for model in text.index:
                cells = [f"<td><b>{escape(text.loc[model, c])}</b></td>" if bold.loc[model, c] and text.loc[model, c]
                         else f"<td>{escape(text.loc[model, c])}</td>" for c in columns]
                parts.append(f"<tr><td>{escape(_label(model, flagged))}</td>{''.join(cells)}</tr>")
            parts.append("</tbody></table>")
    parts.append("</body></html>\n")
    return "".join(parts)
