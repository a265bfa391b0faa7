#!/usr/bin/env python3
"""An analyst's first script over escr-gateway: the performance indicators of several
councils for several financial years, each council's minimum data set as CSV, and a
chart of the indicators across the years.

    export ESCR_TOKEN=$(cargo run -q -- token --role analyst --purpose planning)
    python indicators.py --council Northshire=http://127.0.0.1:4000 \\
        --council Southborough=http://127.0.0.1:4000 \\
        --periods 2021-22 2022-23 2023-24 2024-25 2025-26 --out out

(examples/reporting/README.md: the virtualenv, what it writes.)

Each council is asked at its own gateway (`NAME=URL`), with the token in
ESCR_TOKEN_<NAME> (upper case; ESCR_TOKEN for all) and the purpose `planning`. Writes
into --out: indicators.csv (one row per council, period and indicator; a value the
gateway withheld as a small number is left empty, and `suppressed` says so),
mds-<council>-<period>.csv (the data set of the last period, as the gateway sends it)
and indicators.png. The HTTP and CSV parts use the standard library only; the chart
needs matplotlib (requirements.txt).
"""
import argparse
import csv
import json
import os
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

PURPOSE = "planning"
COLUMNS = ["council", "period", "indicator", "name", "unit",
           "numerator", "denominator", "value", "suppressed"]


def token_for(council):
    name = "ESCR_TOKEN_" + "".join(c if c.isalnum() else "_" for c in council.upper())
    token = os.environ.get(name) or os.environ.get("ESCR_TOKEN")
    if not token:
        sys.exit(f"no token for {council}: set {name} (or ESCR_TOKEN)")
    return token


def open_report(base, path, params, token):
    """A response of the gateway's report endpoint; its error message on failure."""
    url = f"{base.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, headers={
        "Authorization": f"Bearer {token}", "X-Purpose-Of-Use": PURPOSE})
    try:
        return urllib.request.urlopen(request, timeout=300)
    except urllib.error.HTTPError as e:
        body = e.read().decode("utf-8", "replace")
        try:
            body = "; ".join(err["message"] for err in json.loads(body)["errors"])
        except (ValueError, KeyError, TypeError):
            pass
        sys.exit(f"{url}: {e.code} {body}")
    except urllib.error.URLError as e:
        sys.exit(f"{url}: {e.reason}")


def indicators(base, council, period, token):
    with open_report(base, "/reports/indicators.json",
                     {"period": period, "authorities": council}, token) as r:
        return json.load(r)["indicators"]


def chart(rows, councils, periods, path):
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    ids = sorted({r["indicator"] for r in rows}, key=lambda i: (len(i), i))
    columns = 3
    lines = (len(ids) + columns - 1) // columns
    fig, axes = plt.subplots(lines, columns, figsize=(5 * columns, 3.4 * lines), squeeze=False)
    for ax, indicator in zip(axes.flat, ids):
        mine = [r for r in rows if r["indicator"] == indicator]
        for council in councils:
            by_period = {r["period"]: r["value"] for r in mine if r["council"] == council}
            # A withheld value is a gap in the line, never a zero.
            values = [by_period.get(p) if by_period.get(p) is not None else float("nan")
                      for p in periods]
            ax.plot(range(len(periods)), values, marker="o", label=council)
        first = mine[0]
        ax.set_title(f"{indicator}. {first['name']}", fontsize=9, wrap=True)
        ax.set_ylabel("%" if first["unit"] == "PERCENT" else "per 100,000", fontsize=8)
        ax.set_xticks(range(len(periods)), periods)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(ids):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Performance indicators by financial year (gaps: withheld small numbers)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--council", action="append", required=True, metavar="NAME=URL",
                        help="a council and its gateway (repeat for each)")
    parser.add_argument("--periods", nargs="+", required=True, help="financial years, e.g. 2024-25")
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--no-chart", action="store_true", help="CSV only (no matplotlib needed)")
    args = parser.parse_args()
    councils = []
    for item in args.council:
        name, sep, url = item.partition("=")
        if not sep or not url:
            parser.error(f"--council {item}: expected NAME=URL")
        councils.append((name, url))
    args.out.mkdir(parents=True, exist_ok=True)

    rows = []
    for council, base in councils:
        token = token_for(council)
        for period in args.periods:
            for i in indicators(base, council, period, token):
                rows.append({
                    "council": i["authority"], "period": i["period"], "indicator": i["id"],
                    "name": i["name"], "unit": i["unit"], "numerator": i["numerator"],
                    "denominator": i["denominator"], "value": i["value"],
                    "suppressed": "yes" if i["suppressed"] else "no",
                })
        # The person-level data set of the last period, streamed to a file.
        last = args.periods[-1]
        target = args.out / f"mds-{council}-{last}.csv"
        with open_report(base, "/reports/mds.csv", {"period": last, "authority": council},
                         token) as r, open(target, "wb") as f:
            shutil.copyfileobj(r, f)
        print(f"{council}: {len(args.periods)} periods; data set {last} in {target}")

    with open(args.out / "indicators.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} indicator rows in {args.out / 'indicators.csv'}")
    if not args.no_chart:
        chart(rows, [c for c, _ in councils], args.periods, args.out / "indicators.png")
        print(f"chart in {args.out / 'indicators.png'}")


if __name__ == "__main__":
    main()
