"""The ``campaign`` command. Parses arguments, configures logging, calls library functions."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path

from campaign.errors import CampaignFailed, SpecError
from schedulers.errors import SchedulerError
from storage.errors import StoreError

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, as a shell reports a command stopped by Ctrl-C


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="campaign", description="Resumable MLIP campaigns over Dask.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("launch", help="run a campaign, or resume it from its store")
    p.add_argument("spec", type=Path)
    p.add_argument("--scheduler", choices=["local", "slurm"], help="override the spec's scheduler.kind")
    p.add_argument("--dry-run", action="store_true",
                   help="validate, print the plan (and the SLURM job script), write nothing")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("status", help="what is done, failed and pending, from the store alone")
    p.add_argument("store", type=Path)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("report", help="the figures of the store's recipe (PNG), from the store alone")
    p.add_argument("store", type=Path)
    p.add_argument("--out", type=Path, help="folder for the PNG files; default: STORE/report")

    p = sub.add_parser("dashboard", help="serve the live campaign page of a store (running or finished), no cluster")
    p.add_argument("store", type=Path)
    p.add_argument("--address", default="127.0.0.1", help="interface to listen on (default: localhost only)")
    p.add_argument("--port", type=int, default=0, help="default: a free port (printed)")
    p.add_argument("--refresh-s", type=float, default=3.0, help="seconds between reads of the store")
    p.add_argument("--allow-origin", action="append", default=[], metavar="HOST:PORT",
                   help="also accept the page opened from there (e.g. localhost:9000, the local end of an ssh tunnel)")

    p = sub.add_parser("export", help="write labeled structures to a file (extxyz) or a folder (deepmd)")
    p.add_argument("store", type=Path)
    p.add_argument("--to", dest="fmt", default="extxyz", choices=["extxyz", "deepmd"],
                   help="extxyz: one file; deepmd: a new folder of DeePMD-kit systems, one per composition")
    p.add_argument("--type-map", type=_element_list, metavar="Mo,S",
                   help="deepmd: element order of type_map.raw; default: the store's elements by atomic number")
    p.add_argument("--hull", action="store_true",
                   help="phase-diagram stores: the relaxed structures on the hull instead, to OUT.extxyz or OUT.cif")
    p.add_argument("--minima", action="store_true",
                   help="anneal stores: each chain's lowest minimum instead (for a phase diagram's hull.structures)")
    p.add_argument("--snapshots", action="store_true",
                   help="slab_mc stores: every chain's snapshots instead, to OUT.extxyz")
    p.add_argument("out", type=Path)
    return parser


def _launch(args) -> int:
    from campaign.launch import build_stages, launch, warn_about_cells
    from campaign.spec import load_spec

    spec = load_spec(args.spec).with_scheduler(args.scheduler)
    if args.dry_run:
        stages = build_stages(spec)
        warn_about_cells(spec, stages, print)
        for stage in stages:
            print(f"stage {stage.name}: {len(stage.items)} items in batches of {stage.batch_size}")
        print(f"store: {Path(spec.store).resolve()}  scheduler: {spec.scheduler.kind.value}")
        if spec.scheduler.kind.value == "slurm":
            from schedulers.cluster import slurm_job_script

            print("SLURM job script (one per worker job; certificate paths are per launch):")
            with tempfile.TemporaryDirectory() as tmp:
                script = slurm_job_script(spec.scheduler, Path(tmp))
                gc.collect()  # dask-jobqueue's temporary certificate files go with the cluster object
            print(script)
        return 0
    report = launch(spec, progress=not args.no_progress)
    print(f"Stored {report.frames} labeled frames in {report.store.resolve()}")
    for s in report.stages:
        print(f"  {s.stage}: {s.done} done, {s.failed} failed, {s.skipped} already done before this launch")
    failed = sum(s.failed for s in report.stages)
    if failed:
        print(f"  {failed} items failed: `campaign status {report.store}` shows why; launching again retries them")
    return EXIT_FAILED if failed else 0


def _status(args) -> int:
    from campaign.status import campaign_status, format_status
    from storage import CampaignStore

    # the user's health check of a store: every chunk's checksum is verified, not only its presence
    status = campaign_status(CampaignStore.open(_store_dir(args.store), checksums=True))
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def _report(args) -> int:
    from campaign.report import write_report
    from storage import CampaignStore

    try:
        store = _store_dir(args.store)
        written = write_report(CampaignStore.open(store), args.out or store / "report")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path in written:
        print(path)
    return 0


def _dashboard(args) -> int:
    from tornado.ioloop import IOLoop

    from campaign.page.serve import start_page_server
    from storage import CampaignStore

    store = _store_dir(args.store)
    CampaignStore.open(store).close()  # not a store, or a damaged one: say so now, not in the browser
    if args.refresh_s <= 0:
        print(f"error: --refresh-s must be positive, not {args.refresh_s:g}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        server = start_page_server(store, args.address, args.port, args.refresh_s, args.allow_origin)
    except OSError as exc:
        print(f"error: cannot listen on {args.address}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"Campaign page: {server.url}  (Ctrl-C stops it)", flush=True)
    try:
        IOLoop.current().start()
    except (KeyboardInterrupt, Terminated):  # Ctrl-C, or SIGTERM from a job's end: the page just stops
        pass
    finally:
        server.stop()
    return 0


def _element_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _export(args) -> int:
    from campaign.deepmd import DeepmdError, export_deepmd
    from campaign.export import export_frames, export_structures
    from storage import CampaignStore
    from storage.frames import iter_frames

    if args.type_map is not None and args.fmt != "deepmd":
        print("error: --type-map applies to --to deepmd only", file=sys.stderr)
        return EXIT_BAD_INPUT
    given = [flag for flag, on in (("--hull", args.hull), ("--minima", args.minima),
                                   ("--snapshots", args.snapshots)) if on]
    chosen = given[0] if given else None
    if len(given) > 1:
        print(f"error: give one of --hull, --minima and --snapshots, not {' and '.join(given)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if chosen and args.fmt != "extxyz":
        print(f"error: {chosen} writes extxyz or CIF (by the file's suffix), not --to deepmd", file=sys.stderr)
        return EXIT_BAD_INPUT
    store = CampaignStore.open(_store_dir(args.store))
    try:
        if args.hull:
            from campaign.recipes.phase_report import hull_structures

            structures = hull_structures(store)
            print(f"wrote {export_structures(structures, args.out)} hull structures to {args.out}")
        elif args.minima:
            from campaign.recipes.anneal_report import lowest_minima

            structures = lowest_minima(store)
            print(f"wrote {export_structures(structures, args.out)} annealing minima to {args.out}")
        elif args.snapshots:
            from campaign.recipes.slab_report import snapshot_structures

            structures = snapshot_structures(store)
            print(f"wrote {export_structures(structures, args.out)} slab snapshots to {args.out}")
        elif args.fmt == "deepmd":
            done = export_deepmd(iter_frames(store), args.out, args.type_map)
            print(f"wrote {done.frames} frames in {done.systems} DeePMD systems (type map "
                  f"{','.join(done.type_map)}) to {args.out}")
        else:
            print(f"wrote {export_frames(store, args.out, args.fmt)} frames to {args.out}")
    except OSError as exc:  # the output's folder is missing, read-only or full: the previous output stays
        print(f"error: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (DeepmdError, ValueError) as exc:  # ValueError: a store with no hull or no minima
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _store_dir(path: Path) -> Path:
    """The store directory, also when the user names its campaign.zarr folder."""
    from storage.schema import ZARR_NAME

    if path.name == ZARR_NAME and (path / "zarr.json").is_file() and not (path / ZARR_NAME).exists():
        return path.parent
    return path


class Terminated(BaseException):
    """SIGTERM (SLURM at the walltime, ``kill``) or SIGHUP (the ssh session of a foreground launch
    dropped), raised in the main thread so that it unwinds the launch like Ctrl-C: arrived results
    are committed, the cluster closed, the lock released."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _quiet_shutdown() -> None:
    # the launch unwinds from here and closes the cluster: a gather still in flight then fails with
    # "Stream is closed", which is expected and must not bury the one line the user needs
    _set_levels(("tornado", "distributed"), logging.CRITICAL)


def _set_levels(prefixes: tuple[str, ...], level: int) -> None:
    """Set ``level`` on these loggers and every descendant that has a level of its own: distributed's
    logging config gives some (tornado.application, distributed.client) explicit levels, which a
    parent's level does not override."""
    names = [name for name in logging.root.manager.loggerDict
             if any(name == p or name.startswith(p + ".") for p in prefixes)]
    for name in {*prefixes, *names}:
        logging.getLogger(name).setLevel(level)


def _raise_terminated(signum, frame) -> None:
    _quiet_shutdown()
    raise Terminated(signum)


def _raise_interrupt(signum, frame) -> None:
    _quiet_shutdown()
    raise KeyboardInterrupt


_TERMINATING = (signal.SIGTERM, signal.SIGHUP)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _raise_terminated) for sig in _TERMINATING} if in_main_thread else {}
    if in_main_thread:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C): results that arrived were committed; launch again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated as exc:
        name = signal.Signals(exc.signum).name
        print(f"terminated ({name}): results that arrived were committed; launch again to resume", file=sys.stderr)
        return 128 + exc.signum  # 143 for SIGTERM, 129 for SIGHUP, as a shell reports them
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import distributed  # noqa: F401 - it sets its loggers up on import; quiet them after that

    _set_levels(("distributed", "dask_jobqueue", "bokeh", "tornado", "trainstation"), logging.ERROR)
    try:
        return {"launch": _launch, "status": _status, "report": _report, "export": _export,
                "dashboard": _dashboard}[args.command](args)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (SchedulerError, CampaignFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
