"""Refuse links that make an NWB file read data from outside itself, before anything is read.

h5py follows an HDF5 external link to any path on the reading machine, and a soft link to
anywhere in the file; hdmf-zarr follows a Zarr NWB's ``zarr_link`` (or a reference's
``source``) to another store, and the file system follows a symlinked chunk anywhere. A
file is read only from itself: every link is looked at without being followed
(``group.get(name, getlink=True)``, ``os.walk`` without following symlinks) and refused
with :class:`~spikelab.exceptions.ExternalLinkError` when it leaves the file, leaves the
Units or electrodes group it sits in, or dangles.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py

from spikelab.exceptions import ExternalLinkError
from spikelab.loaders.nwb._checks import text_value

UNITS_PATH = "/units"
_EPHYS_PATH = "/general/extracellular_ephys"
ELECTRODES_PATH = f"{_EPHYS_PATH}/electrodes"
# Groups whose columns become lake rows: a link inside one must stay inside it.
CONFINED = (UNITS_PATH, ELECTRODES_PATH)
# Groups the h5py reader opens (their members' links are checked, one level deep).
_READ_GROUPS = (
    "/",
    "/general",
    "/general/subject",
    "/general/devices",
    _EPHYS_PATH,
    ELECTRODES_PATH,
    UNITS_PATH,
    "/acquisition",
)
_MAX_SOFT_LINK_DEPTH = 32  # soft links pointing at soft links: a cycle ends here
_ZARR_METADATA = frozenset((".zattrs", ".zarray", ".zgroup", ".zmetadata", "zarr.json"))
_OUTSIDE = "<another file>"  # where an allowed external link leads


class _Hdf5Links:
    """Checks an open HDF5 file's links; ``source`` names the file in the errors."""

    def __init__(self, handle: h5py.File, source: str, *, remote: bool, allow_external: bool):
        self.handle = handle
        self.source = source
        self.remote = remote
        self.allow_external = allow_external and not remote

    @property
    def fix(self) -> str:
        """What to do about a link to another file."""
        if self.remote:
            return (
                "a remote file's links to other files are never followed; ask its authors to "
                "store the data in the file itself"
            )
        return (
            "store the linked data in the file itself (re-export it), or, for a trusted local "
            "file, pass allow_external_links=True to follow its external links"
        )

    def external(self, where: str, link: h5py.ExternalLink) -> None:
        """Refuse an external link, unless the caller allowed them for this local file."""
        if self.allow_external:
            if self.handle.get(where) is None:
                raise ExternalLinkError(
                    f"{self.source}: {where.lstrip('/')} is an HDF5 external link to "
                    f"{link.filename}:{link.path}, which does not exist (a dangling link); "
                    "restore the linked file or re-export this one"
                )
            return
        raise ExternalLinkError(
            f"{self.source}: {where.lstrip('/')} is an HDF5 external link to "
            f"{link.filename}:{link.path}; spikelab reads a file only from itself and refuses "
            f"links to other files: {self.fix}"
        )

    def resolve(self, path: str, depth: int = 0) -> str | None:
        """The hard path ``path`` leads to, soft links followed inside the file.

        None when it leads nowhere (a dangling link); ``_OUTSIDE`` when it passes through
        an allowed external link. An external link on the way is refused otherwise.
        """
        if depth > _MAX_SOFT_LINK_DEPTH:
            return None  # a cycle of soft links leads nowhere
        current = "/"
        for part in (p for p in path.split("/") if p and p != "."):
            group = self.handle.get(current)
            if not isinstance(group, h5py.Group):
                return None
            link = group.get(part, getlink=True)
            here = posixpath.join(current, part)
            if link is None:
                return None
            if isinstance(link, h5py.ExternalLink):
                self.external(here, link)
                return _OUTSIDE
            if isinstance(link, h5py.SoftLink):
                target = str(link.path)
                resolved = self.resolve(posixpath.join(current, target), depth + 1)
                if resolved is None or resolved == _OUTSIDE:
                    return resolved
                current = resolved
            else:
                current = here
        return current

    def soft(self, where: str, link: h5py.SoftLink) -> None:
        """Refuse a soft link that dangles or leaves the Units or electrodes group it is in."""
        parent = posixpath.dirname(where)
        target = posixpath.join(parent, str(link.path))
        resolved = self.resolve(target)
        name = where.lstrip("/")
        if resolved is None:
            raise ExternalLinkError(
                f"{self.source}: {name} is a soft link to {link.path}, which does not exist in "
                "the file (a dangling link); the file is incomplete: re-export it from its source"
            )
        if resolved == _OUTSIDE:
            return
        for group in CONFINED:
            inside = resolved == group or resolved.startswith(f"{group}/")
            if where == group or (where.startswith(f"{group}/") and not inside):
                raise ExternalLinkError(
                    f"{self.source}: {name} is a soft link to {link.path}, outside the {group} "
                    "group; spikelab reads that group's columns only from the group itself: "
                    f"rewrite the file with the data stored in {group}"
                )

    def link(self, where: str, link: Any) -> None:
        """Check one link, found at the hard path ``where``."""
        if isinstance(link, h5py.ExternalLink):
            self.external(where, link)
        elif isinstance(link, h5py.SoftLink):
            self.soft(where, link)
        elif any(where.startswith(f"{group}/") for group in CONFINED):
            self.storage(where)

    def storage(self, where: str) -> None:
        """Refuse a dataset whose values live in other files (external storage, virtual)."""
        if self.allow_external:
            return
        item = _open(self.handle, where)
        if not isinstance(item, h5py.h5d.DatasetID):
            return
        plist = item.get_create_plist()
        outside = [plist.get_external(i)[0].decode() for i in range(plist.get_external_count())]
        if plist.get_layout() == h5py.h5d.VIRTUAL:
            dataset = h5py.Dataset(item, readonly=True)
            outside += [s.file_name for s in dataset.virtual_sources() if s.file_name != "."]
        if outside:
            raise ExternalLinkError(
                f"{self.source}: {where.lstrip('/')} keeps its values in other files "
                f"({', '.join(sorted(set(outside)))}); spikelab reads a file only from itself: "
                f"{self.fix}"
            )

    def members(self, group_path: str) -> Iterator[tuple[str, Any]]:
        """``(hard path, link)`` of each member of a group the file has at ``group_path``.

        The links are read from the group's link table alone (no member is opened).
        """
        links = self.handle.id.links
        path = group_path.strip("/").encode() or b"."
        kinds: list[tuple[bytes, int]] = []
        try:
            if path != b"." and links.get_info(path).type != h5py.h5l.TYPE_HARD:
                return  # a link checked as a member of its parent
            links.iterate(
                lambda name, info: kinds.append((name, info.type)), obj_name=path, info=True
            )
        except (KeyError, RuntimeError):  # absent (or a parent is), or not a group
            return
        for name, kind in kinds:
            where = posixpath.join(group_path, name.decode())
            member = name if path == b"." else path + b"/" + name
            if kind == h5py.h5l.TYPE_HARD:
                yield where, h5py.HardLink()
            elif kind == h5py.h5l.TYPE_SOFT:
                yield where, h5py.SoftLink(links.get_val(member).decode())
            else:  # external, or a user-defined kind: either may lead anywhere
                filename, target = (
                    links.get_val(member)
                    if kind == h5py.h5l.TYPE_EXTERNAL
                    else (b"<a user-defined link>", name)
                )
                yield where, h5py.ExternalLink(filename.decode(), target.decode())


def _open(handle: h5py.File, path: str) -> Any:
    """The low-level h5py object (GroupID, DatasetID ...) at ``path``; None if absent."""
    try:
        return h5py.h5o.open(handle.id, path.encode())
    except KeyError:
        return None


def check_hdf5_links(
    handle: h5py.File, source: str, *, remote: bool = False, allow_external: bool = False
) -> None:
    """Refuse the links of the groups spikelab's readers use that lead outside the file.

    Looks, without following a link, at each member of the root, ``general``, the subject,
    the devices, every electrode group, the electrodes table, the Units table and
    ``acquisition`` (and the first ElectricalSeries, whose shape and timing are read): an
    external link is refused (``remote`` files always; local ones unless
    ``allow_external``), a soft link that dangles or leaves the Units or electrodes group it
    sits in is refused, and so is a Units or electrodes column whose values live in other
    files.

    Raises
    ------
    ExternalLinkError
        (a ValueError) Naming ``source``, the link and where it leads.
    """
    links = _Hdf5Links(handle, source, remote=remote, allow_external=allow_external)
    paths = list(_READ_GROUPS)
    series: list[str] = []
    for group_path in paths:  # grows by the electrode groups, each checked before it is read
        for where, link in links.members(group_path):
            links.link(where, link)
            if group_path == _EPHYS_PATH and isinstance(link, h5py.HardLink):
                if where not in paths:
                    paths.append(where)
            elif group_path == "/acquisition":
                series.append(where)  # a link to follow has passed its check
    for where in series:  # in name order, as the reader looks for the first ElectricalSeries
        item = _open(handle, where)
        if not isinstance(item, h5py.h5g.GroupID):
            continue
        if text_value(h5py.Group(item).attrs.get("neurodata_type")) == "ElectricalSeries":
            for member, link in links.members(where):
                links.link(member, link)
            break


def check_whole_hdf5_file(handle: h5py.File, source: str, *, allow_external: bool = False) -> None:
    """Refuse every link of a local file that leads outside it (see :func:`check_hdf5_links`).

    pynwb builds every object of a file, so before pynwb opens one every link in it is
    looked at, not only those of the groups spikelab reads.
    """
    links = _Hdf5Links(handle, source, remote=False, allow_external=allow_external)
    found: list[tuple[str, Any]] = []
    handle.visititems_links(lambda name, link: found.append((f"/{name}", link)))
    for where, link in found:
        links.link(where, link)


# --- Zarr ---------------------------------------------------------------------------------


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def _references(value: Any, key: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """``(field, reference)`` of every reference in parsed Zarr metadata.

    A reference is a dict with a ``source`` (hdmf-zarr's links and object references), or
    an entry of a ``zarr_link`` list or an object attribute's ``value`` without one (then
    hdmf-zarr takes its ``path`` as the store to open).
    """
    if isinstance(value, dict):
        if "source" in value or (key in ("zarr_link", "value") and "path" in value):
            yield key, value
        for name, item in value.items():
            yield from _references(item, name)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item, key)


def check_zarr_store(folder: Path, source: str, *, allow_external: bool = False) -> None:
    """Refuse a Zarr NWB store whose metadata or files lead outside its folder.

    Every entry is looked at without following symlinks: a file or folder that is a symlink
    resolving outside the store is refused, and so is metadata (``.zattrs``, ``.zarray``,
    ``.zmetadata`` ...) whose ``zarr_link`` or reference ``source`` names another store.

    Raises
    ------
    ExternalLinkError
        (a ValueError) Naming ``source`` and the offending entry.
    """
    if allow_external:
        return
    root = folder.resolve()
    fix = (
        "spikelab reads a Zarr NWB store only from its own folder; store the data in it "
        "(re-export it), or, for a trusted local store, pass allow_external_links=True"
    )
    for directory, folders, files in os.walk(folder, followlinks=False):
        here = Path(directory)
        for name in [*folders, *files]:
            entry = here / name
            if entry.is_symlink() and not _inside(root, entry.resolve()):
                raise ExternalLinkError(
                    f"{source}: {entry.relative_to(folder)} is a symlink to {entry.resolve()}, "
                    f"outside the store; {fix}"
                )
        for name in files:
            if name in _ZARR_METADATA:
                _check_zarr_metadata(root, here / name, folder, source, fix)


def _check_zarr_metadata(root: Path, file: Path, folder: Path, source: str, fix: str) -> None:
    try:
        metadata = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # not metadata spikelab can parse: hdmf-zarr will say what is wrong
    for key, reference in _references(metadata):
        target = reference.get("source")
        target = reference.get("path") if target is None else target
        if target == "." or not isinstance(target, str):
            continue
        if not _inside(root, Path(os.path.normpath(root / target)).resolve()):
            field = "path" if reference.get("source") is None else "source"
            raise ExternalLinkError(
                f"{source}: {file.relative_to(folder)} has a {key or 'reference'} whose "
                f"{field} {target!r} leads outside the store; {fix}"
            )
