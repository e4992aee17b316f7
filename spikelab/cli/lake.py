"""``spikelab lake``: answer questions about the lake and maintain it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from spikelab.cli.parser import UsageError


def answer(args: argparse.Namespace) -> None:
    """Answer one ``spikelab lake`` question.

    A local lake folder that does not exist answers as an empty lake, with a note on
    stderr: a mistyped ``--lake`` should not pass for a lake with nothing in it.
    """
    if args.question == "summary":
        lake_summary(args.lake, args.as_of)
    elif args.question == "units":
        _units(args)
    elif args.question == "history":
        _history(args.lake, args.limit)
    elif args.question == "compact":
        _compact(args.lake, args.retention_hours)
    elif args.question == "remove":
        _remove(args)
    elif args.question == "export":
        _export(args)
    elif args.question == "regions":
        _regions(args)
    elif args.question == "remap":
        _remap(args)
    else:
        _migrate(args.old, args.new)
        return
    from spikelab.io.storage import is_remote  # loaded by the answer already

    if not is_remote(args.lake) and not Path(args.lake).exists():
        print(f"spikelab: no lake at {args.lake} (check --lake or SPIKELAB_LAKE)", file=sys.stderr)


def lake_summary(lake: str, as_of: str | None = None) -> None:
    """Print assets, units and spikes per dataset."""
    from spikelab.lake_queries import SUMMARY_COLUMNS, format_rows, summary_rows

    rows = summary_rows(lake, as_of)
    print(format_rows(SUMMARY_COLUMNS, rows) if rows else "the lake is empty")


def _units(args: argparse.Namespace) -> None:
    from spikelab.lake_queries import export_units, format_rows, matching_units

    if args.format == "parquet" and not args.output:
        raise UsageError("--format parquet needs --output FILE")
    filters = {**unit_filters(args), "columns": args.columns}
    if args.format == "table":
        columns, rows = matching_units(args.lake, as_of=args.as_of, **filters)
        print(format_rows(columns, rows) if rows else "no matching units")
        return
    sys.stdout.flush()
    destination = args.output or sys.stdout.buffer
    export_units(args.lake, destination, args.format, as_of=args.as_of, **filters)
    if args.output:
        print(f"units -> {args.output}")


def _history(lake: str, limit: int | None) -> None:
    from spikelab.io.delta_read import history
    from spikelab.lake_queries import HISTORY_COLUMNS, format_rows

    columns = (*HISTORY_COLUMNS, "readable")  # no: `lake compact` deleted its files
    rows = [
        (*(entry[name] for name in HISTORY_COLUMNS), "yes" if entry["readable"] else "no")
        for entry in history(lake, limit)
    ]
    print(format_rows(columns, rows) if rows else "the lake has no versions yet")


def _remove(args: argparse.Namespace) -> None:
    from spikelab.io.lake_remove import remove_assets

    if not args.asset and args.dataset is None:
        raise UsageError("lake remove needs --asset ID or --dataset NAME (or both)")
    removed = remove_assets(args.lake, assets=args.asset, dataset=args.dataset, source=args.source)
    if not removed.assets:
        raise UsageError(f"no asset in lake {args.lake} matches {removed.asked}")
    for source, dataset_id, asset_id in removed.assets:
        print(f"removed {source}/{dataset_id}/{asset_id}")
    print(
        f"{len(removed.assets)} asset(s), {removed.units} units rows and {removed.files} "
        f"manifest/raster files removed; `--as-of {removed.last_version}` still reads them "
        "until `spikelab lake compact`"
        if removed.last_version is not None
        else f"{len(removed.assets)} asset(s) and {removed.files} manifest/raster files removed"
    )


def _export(args: argparse.Namespace) -> None:
    from spikelab.io.lake_export import export_selection

    written = export_selection(
        args.lake,
        args.output,
        args.format,
        as_of=args.as_of,
        **unit_filters(args),
    )
    print(f"{written.units} units of {written.assets} asset(s) -> {written.path}")


def unit_filters(args: argparse.Namespace) -> dict[str, Any]:
    """The unit filters of ``lake units`` and ``lake export``, as find_units takes them."""
    return {
        "regions": args.region,
        "region_labels": args.region_label,
        "source": args.source,
        "dataset": args.dataset,
        "min_rate_hz": args.min_rate,
        "species": args.species,
        "good": args.good,
    }


def _regions(args: argparse.Namespace) -> None:
    from spikelab.lake_queries import REGION_COLUMNS, UNMAPPED_COLUMNS, format_rows, region_rows

    mapped, unmapped = region_rows(args.lake, args.level, args.as_of)
    print(format_rows(REGION_COLUMNS, mapped) if mapped else "no unit is mapped to a region")
    if unmapped:
        print("\nlabels not mapped (add aliases, then `spikelab lake remap`):")
        print(format_rows(UNMAPPED_COLUMNS, unmapped))


def _remap(args: argparse.Namespace) -> None:
    from spikelab.io.lake_remap import remap

    report = remap(args.lake, aliases=args.region_aliases)
    if report["version"] is None:
        print("the lake has no units: nothing to remap")
    else:
        print(
            f"remapped {report['rows']} units ({report['changed']} changed) with alias table "
            f"{report['aliases_version']}: now version {report['version']}"
        )
    if report["sessions_added"]:
        print(f"added {report['sessions_added']} sessions row(s)")


def _compact(lake: str, retention_hours: int) -> None:
    from spikelab.io.delta_upkeep import compact

    report = compact(lake, retention_hours=retention_hours)
    if not report:
        print("the lake is empty: nothing to compact")
    for table, done in report.items():
        print(
            f"{table}: {done['files_removed']} files merged into {done['files_added']}, "
            f"{done['files_vacuumed']} unused files deleted, now version {done['version']}"
        )


def _migrate(old: str, new: str) -> None:
    from spikelab.io import storage
    from spikelab.io.delta_lake import open_table, units_uri
    from spikelab.io.delta_migrate import migrate
    from spikelab.io.lake import resolve_lake

    old, new = resolve_lake(old), resolve_lake(new)
    if open_table(units_uri(old)) is not None:
        raise UsageError(f"{old} is already a lake of Delta tables: there is nothing to migrate")
    if not any(storage.list_files(storage.join(old, kind), "") for kind in ("units", "manifests")):
        raise UsageError(
            f"{old} holds no units/ or manifests/ files of the old layout: give the root of "
            "the lake to migrate"
        )
    if open_table(units_uri(new)) is not None:
        raise UsageError(f"{new} already holds a lake's tables: migrate into a new root")
    done = migrate(old, new)
    print(
        f"{done['assets']} assets, {done['units']} units and {done['files_copied']} other "
        f"files -> lake {new} ({old} is unchanged)"
    )
