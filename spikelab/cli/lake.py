"""``spikelab lake``: answer questions about the lake and maintain it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from spikelab.cli.parser import UsageError

if TYPE_CHECKING:
    from spikelab.io.lake import Lake
    from spikelab.unit_filter import UnitFilter


def answer(args: argparse.Namespace) -> None:
    """Answer one ``spikelab lake`` question.

    A local lake folder that does not exist answers as an empty lake, with a note on
    stderr: a mistyped ``--lake`` should not pass for a lake with nothing in it. The lake
    handle is made once, here, and the unit filter once by :func:`unit_filter`; both are
    handed down as they are.
    """
    if args.question == "migrate":
        _migrate(args.old, args.new)
        return
    from spikelab.io.lake import Lake
    from spikelab.io.storage import is_remote

    lake = Lake(args.lake)
    if args.question == "summary":
        lake_summary(lake, args.as_of)
    elif args.question == "units":
        _units(lake, args)
    elif args.question == "history":
        _history(lake, args.limit)
    elif args.question == "compact":
        _compact(lake, args.retention_hours)
    elif args.question == "remove":
        _remove(lake, args)
    elif args.question == "export":
        _export(lake, args)
    elif args.question == "regions":
        _regions(lake, args)
    else:
        _remap(lake, args)
    if not is_remote(lake.root) and not Path(lake.root).exists():
        print(f"spikelab: no lake at {lake} (check --lake or SPIKELAB_LAKE)", file=sys.stderr)


def lake_summary(lake: Lake | str, as_of: str | None = None) -> None:
    """Print assets, units and spikes per dataset."""
    from spikelab.lake_queries import SUMMARY_COLUMNS, format_rows, summary_rows

    rows = summary_rows(lake, as_of)
    print(format_rows(SUMMARY_COLUMNS, rows) if rows else "the lake is empty")


def _units(lake: Lake, args: argparse.Namespace) -> None:
    from spikelab.lake_queries import export_units, format_rows, matching_units

    if args.format == "parquet" and not args.output:
        raise UsageError("--format parquet needs --output FILE")
    selection = unit_filter(args)
    if args.format == "table":
        columns, rows = matching_units(lake, selection, as_of=args.as_of)
        print(format_rows(columns, rows) if rows else "no matching units")
        return
    sys.stdout.flush()
    destination = args.output or sys.stdout.buffer
    export_units(lake, destination, args.format, selection, as_of=args.as_of)
    if args.output:
        print(f"units -> {args.output}")


def _history(lake: Lake, limit: int | None) -> None:
    from spikelab.io.delta_read import history
    from spikelab.lake_queries import HISTORY_COLUMNS, format_rows

    columns = (*HISTORY_COLUMNS, "readable")  # no: `lake compact` deleted its files
    rows = [
        (*(entry[name] for name in HISTORY_COLUMNS), "yes" if entry["readable"] else "no")
        for entry in history(lake, limit)
    ]
    print(format_rows(columns, rows) if rows else "the lake has no versions yet")


def _remove(lake: Lake, args: argparse.Namespace) -> None:
    from spikelab.io.lake_remove import remove_assets

    if not args.asset and args.dataset is None:
        raise UsageError("lake remove needs --asset ID or --dataset NAME (or both)")
    removed = remove_assets(lake, assets=args.asset, dataset=args.dataset, source=args.source)
    if not removed.assets:
        raise UsageError(f"no asset in lake {lake} matches {removed.asked}")
    for source, dataset_id, asset_id in removed.assets:
        print(f"removed {source}/{dataset_id}/{asset_id}")
    print(
        f"{len(removed.assets)} asset(s), {removed.units} units rows and {removed.files} "
        f"manifest/raster files removed; `--as-of {removed.last_version}` still reads them "
        "until `spikelab lake compact`"
        if removed.last_version is not None
        else f"{len(removed.assets)} asset(s) and {removed.files} manifest/raster files removed"
    )


def _export(lake: Lake, args: argparse.Namespace) -> None:
    from spikelab.io.lake_export import export_selection

    written = export_selection(lake, args.output, args.format, unit_filter(args), as_of=args.as_of)
    print(f"{written.units} units of {written.assets} asset(s) -> {written.path}")


def unit_filter(args: argparse.Namespace) -> UnitFilter:
    """The units ``lake units`` or ``lake export`` selects, from their options, built once."""
    from spikelab.unit_filter import UnitFilter

    return UnitFilter(
        regions=args.region,
        region_labels=args.region_label,
        source=args.source,
        dataset=args.dataset,
        min_rate_hz=args.min_rate,
        species=args.species,
        good=args.good,
        columns=getattr(args, "columns", ()),  # lake export has no --columns
    )


def _regions(lake: Lake, args: argparse.Namespace) -> None:
    from spikelab.lake_queries import REGION_COLUMNS, UNMAPPED_COLUMNS, format_rows, region_rows

    mapped, unmapped = region_rows(lake, args.level, args.as_of)
    print(format_rows(REGION_COLUMNS, mapped) if mapped else "no unit is mapped to a region")
    if unmapped:
        print("\nlabels not mapped (add aliases, then `spikelab lake remap`):")
        print(format_rows(UNMAPPED_COLUMNS, unmapped))


def _remap(lake: Lake, args: argparse.Namespace) -> None:
    from spikelab.io.lake_remap import remap

    report = remap(lake, aliases=args.region_aliases)
    if report["version"] is None:
        print("the lake has no units: nothing to remap")
    else:
        print(
            f"remapped {report['rows']} units ({report['changed']} changed) with alias table "
            f"{report['aliases_version']}: now version {report['version']}"
        )
    if report["sessions_added"]:
        print(f"added {report['sessions_added']} sessions row(s)")


def _compact(lake: Lake, retention_hours: int) -> None:
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
    from spikelab.io.delta_migrate import migrate
    from spikelab.io.delta_tables import open_table, units_uri
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
