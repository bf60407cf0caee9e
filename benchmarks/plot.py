"""Plot the headline benchmark's JSON: throughput and lag over time, per variant.

    python benchmarks/headline.py --runs 3        # writes benchmarks/results/headline.json
    python benchmarks/plot.py benchmarks/results/headline.json -o benchmarks/results/headline.png [--run 0]

Needs matplotlib (``pip install 'salt-relay[bench]'``). One row per payload
(ping, state); left: returns acknowledged by the master per second (solid)
and, for relay, rows stored per second (dashed); right: the lag from the
master's acknowledgement to the committed ``returns`` row, median and max of
the returns acknowledged in each 0.5 s bucket. One run per variant (``--run``).
"""

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after matplotlib.use)

LABELS = {
    "noop": "no-op job cache (ceiling)",
    "local_cache": "local_cache",
    "saltext_mysql": "saltext-mysql",
    "relay_rabbitmq": "relay RabbitMQ+MariaDB",
    "relay_redis": "relay Redis+MariaDB",
    "relay_embedded": "relay embedded",
}
PAYLOADS = ("ping", "state")


def phases_of(document, run_index):
    """{variant: {payload: phase}} for one run of each variant."""
    found = {}
    for run in document.get("runs", []):
        if run.get("run") == run_index and run.get("phases"):
            found[run["variant"]] = run["phases"]
    return found


def plot(document, run_index, output):
    phases = phases_of(document, run_index)
    if not phases:
        raise SystemExit(f"no run {run_index} with phases in the JSON")
    figure, axes = plt.subplots(len(PAYLOADS), 2, figsize=(14, 4.5 * len(PAYLOADS)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, payload in enumerate(PAYLOADS):
        rate_axis, lag_axis = axes[row]
        for index, (variant, variant_phases) in enumerate(phases.items()):
            line = (variant_phases.get(payload) or {}).get("timeline")
            if not line:
                continue
            step = line["bucket_s"]
            seconds = [k * step for k in range(len(line["acked"]))]
            color = colors[index % len(colors)]
            label = LABELS.get(variant, variant)
            rate_axis.plot(seconds, [n / step for n in line["acked"]], color=color, label=f"{label}: acknowledged")
            if any(line["stored"]):
                rate_axis.plot(seconds, [n / step for n in line["stored"]], color=color, linestyle="--", label=f"{label}: stored")
            points = [(s, p, m) for s, p, m in zip(seconds, line["lag_p50_s"], line["lag_max_s"]) if p is not None]
            if points:
                lag_axis.plot([p[0] for p in points], [p[1] for p in points], color=color, label=f"{label}: median")
                lag_axis.plot([p[0] for p in points], [p[2] for p in points], color=color, linestyle=":", label=f"{label}: max")
        rate_axis.set_title(f"{payload} returns: throughput")
        rate_axis.set_xlabel("seconds since the phase started")
        rate_axis.set_ylabel("returns per second")
        rate_axis.legend(fontsize="small")
        lag_axis.set_title(f"{payload} returns: acknowledgement -> committed row")
        lag_axis.set_xlabel("acknowledged at (s since the phase started)")
        lag_axis.set_ylabel("lag (s)")
        lag_axis.legend(fontsize="small")
    machine = document.get("machine", {})
    figure.suptitle(
        f"salt-relay headline benchmark, run {run_index}: {machine.get('cores')} cores, {machine.get('cpu')}, Salt {machine.get('salt')}"
    )
    figure.tight_layout()
    figure.savefig(output, dpi=90)
    return output


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", help="the file headline.py --json wrote")
    parser.add_argument("-o", "--output", default="headline.png")
    parser.add_argument("--run", type=int, default=0, help="which run of each variant (default 0)")
    args = parser.parse_args(argv)
    with open(args.json, encoding="utf-8") as handle:
        document = json.load(handle)
    print(plot(document, args.run, args.output))


if __name__ == "__main__":
    main()
