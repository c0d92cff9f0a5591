"""The protocol registry: one entry per evaluation protocol of ``table.csv`` (the
``protocol`` column), in the style of the model registry. The wide tables and the
figures take their names, titles and reading order from here; the workflow's path
helpers take each protocol's predictions pattern.

A protocol with a ``run`` function is run by the generic ``evaluate --protocol NAME``
command and the workflow's generic rule whenever its config section says ``enabled``:
adding one takes this entry, its module and its config schema section
(docs/extending.md). The built-in zero-shot, probe and fine-tune protocols keep commands
of their own (zero-shot shares the features job's loaded model; the probe writes its
fixed-C twin from the same fits).
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.registry import Registry


@dataclass(frozen=True)
class Protocol:
    name: str  # the `protocol` column of table.csv and the predictions folder name
    short: str  # column prefix in the wide tables (ZS, LP, ...)
    title: str  # figure titles
    tick: str  # bar-figure tick label ("\n" breaks the line)
    fraction: bool  # run per label fraction (and per patient draw of each fraction)
    # Predictions file under <results>/predictions/, formatted with task, model, seed, and
    # for fraction protocols fraction (as %g) and draw.
    output: str
    in_figures: bool = True  # drawn in the bar and label-efficiency figures (sensitivity rows are not)
    # "module:function" run by the generic evaluate command, called as function(config, job)
    # with a benchmark.evaluate.run.ProtocolJob; None for the protocols with commands of their own.
    run: str | None = None
    reads: str = "features"  # what the generic rule gives it: "features" (the dataset's npz) or "checkpoint"

    def predictions(self, results: str, task: str, model: str, seed, fraction=None, draw: int = 0) -> str:
        return f"{results}/predictions/" + self.output.format(task=task, model=model, seed=seed,
                                                             fraction=f"{float(fraction):g}" if self.fraction else "",
                                                             draw=draw)


PROTOCOLS: dict[str, Protocol] = Registry("protocol")
register_protocol = PROTOCOLS.register


# Registration order is the reading order of tables and figures.
register_protocol(Protocol("zeroshot", "ZS", "zero-shot", "zero-shot", False,
                           "{task}/zeroshot/{model}/seed{seed}.csv"))
register_protocol(Protocol("zeroshot_prefixed", "ZS-prefixed", "zero-shot, metadata-prefixed", "zero-shot\nprefixed",
                           False, "{task}/zeroshot_prefixed/{model}/seed{seed}.csv"))
register_protocol(Protocol("linear_probe", "LP", "linear probe", "probe", True,
                           "{task}/linear_probe_{fraction}/{model}/seed{seed}-draw{draw}.csv"))
register_protocol(Protocol("linear_probe_fixed_c", "LP-fixed-C", "linear probe, fixed C (no validation choice)",
                           "probe\nfixed C", True, "{task}/linear_probe_fixed_c_{fraction}/{model}/seed{seed}-draw{draw}.csv",
                           in_figures=False))
register_protocol(Protocol("finetune", "FT", "full fine-tune", "fine-tune", True,
                           "{task}/finetune_{fraction}/{model}/seed{seed}-draw{draw}.csv"))
register_protocol(Protocol("knn", "kNN", "k-nearest neighbours", "k-NN", True,
                           "{task}/knn_{fraction}/{model}/seed{seed}-draw{draw}.csv",
                           run="benchmark.evaluate.knn:run", reads="features"))


def generic_protocols(config: dict) -> list[Protocol]:
    """The protocols the generic evaluate rule runs in this config: a ``run`` function and
    ``enabled: true`` in their config section."""
    return [p for p in PROTOCOLS.values() if p.run and config.get(p.name, {}).get("enabled", False)]


def cell_order(protocol: str, fraction: str) -> tuple[int, float]:
    """Reading order of (protocol, fraction) cells, shared by the tables and the figures:
    registration order, then label fraction; unknown protocols last."""
    order = list(PROTOCOLS)
    return (order.index(protocol) if protocol in order else len(order), float(fraction) if fraction else -1.0)
