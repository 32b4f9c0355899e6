"""`python -m bench [--smoke] [--out DIR]`: run every measurement, write JSON, markdown and a plot.

The full run (about 13 minutes here, 5 of them the bursts) writes docs/benchmarks.md, docs/benchmarks.json and
docs/benchmarks-create.png; `--smoke` uses tiny counts (the test suite runs it into a temporary
folder, checking only that it completes and writes its files); `--render` recomputes the summary
from the raw samples in the JSON already there and rewrites it, the markdown and the plot (after
editing bench/notes.md, the closing notes, or how a summary is computed); `--only burst,gateway,live,noisy`
runs just those sections into the JSON already there and renders the whole report again.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import measure, report
from bench.fleet import REPO, Fleet, RedisServer

NOTES_FILE = Path(__file__).with_name("notes.md")


def run(*, smoke: bool, out: Path, image: str, pool_size: int) -> dict[str, Any]:
    import docker

    counts = measure.SMOKE if smoke else measure.FULL
    docker_client = docker.from_env()
    docker_client.images.get(image)  # fails clearly if the image is missing
    results: dict[str, Any] = {
        "meta": {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "mode": "smoke" if smoke else "full",
                 "image": image, "image_id": docker_client.images.get(image).id, "pool_size": pool_size,
                 "raw_label": measure.RAW_LABEL,
                 "counts": counts.__dict__, "machine": report.machine()},
        "raw": {}, "ours": {},
    }
    ours, raw = results["ours"], results["raw"]
    with tempfile.TemporaryDirectory(prefix="spawner-bench-") as tmp:
        work = Path(tmp)
        log = print if not smoke else (lambda *a: None)

        log("cold fleet (SPAWNER_WARM_POOL_SIZE=0)")
        redis = RedisServer(work / "redis-cold")
        redis.start()
        fleet = Fleet(redis, work, image=image, env={"SPAWNER_WARM_POOL_SIZE": "0"})
        try:
            fleet.start()
            time.sleep(1.0)  # let the start-up reconcile and first heartbeats settle
            ours["rss"] = {"idle": fleet.rss_bytes()}
            log("  creates, side by side with the SDK")
            cold = measure.create_side_by_side(fleet, docker_client, image, counts.creates, pool_size=0)
            raw["create"] = cold.pop("raw")
            ours["create_cold"] = cold
            log("  turn round trips, side by side with the SDK")
            turns = measure.turn_side_by_side(fleet, docker_client, image, counts.turns)
            raw["exec"], ours["turn"] = turns["raw"], turns["ours"]
            log(f"  {counts.parallel} parallel turns")
            ours["parallel"] = measure.parallel_turns(fleet, counts.parallel, counts.parallel_sleep_seconds)
            ours["rss"]["at_turns"] = ours["parallel"]["rss_peak"]
            log("  event latency")
            ours["events"] = measure.event_latency(fleet, counts.event_lines)
        finally:
            fleet.stop()
            fleet.cleanup(docker_client)
            measure.remove_raw(docker_client)
            redis.stop()

        log(f"warm fleet (SPAWNER_WARM_POOL_SIZE={pool_size})")
        redis = RedisServer(work / "redis-warm")
        redis.start()
        fleet = Fleet(redis, work, image=image, env={"SPAWNER_WARM_POOL_SIZE": str(pool_size)})
        try:
            fleet.start()
            log("  creates, side by side with the SDK")
            warm = measure.create_side_by_side(fleet, docker_client, image, counts.creates, pool_size=pool_size)
            raw["create"] += warm.pop("raw")
            ours["create_warm"] = warm
        finally:
            fleet.stop()
            fleet.cleanup(docker_client)
            measure.remove_raw(docker_client)
            redis.stop()

        log("model gateway, from containers: forwarder + gateway vs straight to the same stand-in")
        from bench import gateway as gateway_bench  # aiohttp only when measured
        ours["gateway"] = gateway_bench.run(image=image, smoke=smoke, log=log)

        log("live turn events: the stand-in sends a text block -> a Pub/Sub subscriber has the message event")
        from bench import live
        ours["live"] = live.run(image=image, smoke=smoke, log=log)

        log("noisy neighbour: one agent printing random bytes while others run turns")
        from bench import noisy
        ours["noisy"] = noisy.run(image=image, smoke=smoke, log=log)

        log("bursts: many calls at once, each side by side with the SDK in the same run")
        from bench import burst
        ours["burst"] = burst.run(image=image, smoke=smoke, log=log)

        log("several engines: placement, creates through 3 engines vs 1, an engine's death")
        from bench import engines
        ours["engines"] = engines.run(image=image, smoke=smoke, log=log)

        log("sweep")
        ours["sweep"] = {str(due): measure.sweep_cost(work, records=counts.sweep_records, due=due,
                                                       repeats=counts.sweep_repeats)
                         for due in counts.sweep_due}

    results["summary"] = report.summarize(results)
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(results, out / "benchmarks.json")
    write_reports(results, out, smoke=smoke)
    return results


#: The sections that run on their own (`--only`), each with its module's run().
SECTIONS = ("burst", "engines", "gateway", "live", "noisy")


def run_sections(names: list[str], *, out: Path, image: str) -> dict[str, Any]:
    """Run only these sections and put them into the results already in OUT/benchmarks.json (the
    others stay as measured before; meta.sections says when and under what load each ran)."""
    import importlib

    import docker

    results: dict[str, Any] = json.loads((out / "benchmarks.json").read_text())
    image_id = docker.from_env().images.get(image).id
    for name in names:
        print(f"{name}:")
        load_before = _load_averages()
        results["ours"][name] = importlib.import_module(f"bench.{name}").run(image=image, smoke=False, log=print)
        results["meta"].setdefault("sections", {})[name] = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "image": image, "image_id": image_id,
            "load_before": load_before, "load_after": _load_averages()}
    results["summary"] = report.summarize(results)
    report.write_json(results, out / "benchmarks.json")
    write_reports(results, out, smoke=results["meta"]["mode"] == "smoke")
    return results


def _load_averages() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg writes them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def write_reports(results: dict[str, Any], out: Path, *, smoke: bool) -> None:
    """benchmarks.md (with bench/notes.md) and the create plot, from the results."""
    plot_name = "benchmarks-create.png"
    report.plot_creates(results, out / plot_name)
    smoke_notes = "## Notes\n\nSmoke run: counts too small to mean anything."
    notes = NOTES_FILE.read_text() if NOTES_FILE.exists() and not smoke else smoke_notes
    if "noisy" in results["ours"]:  # bench/noisy.py (results written before it existed lack it)
        from bench import noisy
        notes = noisy.markdown(results["ours"]["noisy"]["summary"]) + "\n" + notes
    if "engines" in results["ours"]:  # bench/engines.py (results written before it existed lack it)
        from bench import engines
        notes = engines.markdown(results["ours"]["engines"]["summary"]) + "\n" + notes
    if "gateway" in results["ours"]:  # bench/gateway.py (results written before it existed lack it)
        from bench import gateway
        notes = gateway.markdown(results["ours"]["gateway"]["summary"]) + "\n" + notes
    if "live" in results["ours"]:  # bench/live.py (results written before it existed lack it)
        from bench import live
        notes = live.markdown(results["ours"]["live"]["summary"]) + "\n" + notes
    if "burst" in results["ours"]:  # bench/burst.py (results written before it existed lack it)
        from bench import burst
        notes = burst.markdown(results["ours"]["burst"]) + "\n" + notes
    (out / "benchmarks.md").write_text(report.markdown(results, plot_name=plot_name, json_name="benchmarks.json",
                                                       notes=notes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts: checks that everything runs")
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where to write (default: docs/)")
    parser.add_argument("--image", default="workers-spawner/worker:latest")
    parser.add_argument("--pool-size", type=int, default=2, help="SPAWNER_WARM_POOL_SIZE of the warm fleet")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: rewrite benchmarks.md and the plot from OUT/benchmarks.json")
    parser.add_argument("--only", metavar="SECTION[,SECTION]",
                        help=f"run only these of {', '.join(SECTIONS)} into OUT/benchmarks.json (the rest is kept)")
    args = parser.parse_args(argv)
    only = [name for name in (args.only or "").split(",") if name]
    if any(name not in SECTIONS for name in only):
        parser.error(f"--only takes {', '.join(SECTIONS)}")
    if only:
        results = run_sections(only, out=args.out, image=args.image)
    elif args.render:
        results = json.loads((args.out / "benchmarks.json").read_text())
        results["summary"] = report.summarize(results)  # from the raw samples, never the stored summary
        report.write_json(results, args.out / "benchmarks.json")
        write_reports(results, args.out, smoke=results["meta"]["mode"] == "smoke")
    else:
        results = run(smoke=args.smoke, out=args.out, image=args.image, pool_size=args.pool_size)
    for key, what, limit, unit in report.TARGETS:
        if key not in results["summary"]["targets"]:
            continue
        value = results["summary"]["targets"][key]
        print(f"{'met   ' if value <= limit else 'MISSED'} {what}: {value:.2f} (limit {limit:g} {unit})")
    from bench import noisy
    for key, what, limit, unit in noisy.TARGETS if "noisy" in results["ours"] else ():
        value = results["ours"]["noisy"]["summary"][key]
        print(f"{'met   ' if value <= limit else 'MISSED'} {what}: {value:.2f} (limit {limit:g} {unit})")
    from bench import engines
    for key, what, limit, unit in engines.TARGETS if "engines" in results["ours"] else ():
        value = results["ours"]["engines"]["summary"][key]
        print(f"{'met   ' if value <= limit else 'MISSED'} {what}: {value:.2f} (limit {limit:g} {unit})")
    from bench import burst
    for key, what, limit, unit in burst.TARGETS if "burst" in results["ours"] else ():
        value = results["ours"]["burst"]["summary"]["targets"][key]
        print(f"{'met   ' if value <= limit else 'MISSED'} {what}: {value:.2f} (limit {limit:g} {unit})")
    if "live" in results["ours"]:
        live_p95 = results["ours"]["live"]["summary"]["message_ms_p95"]
        print(f"{'met   ' if results['ours']['live']['summary']['meets_target'] else 'MISSED'} live message event "
              f"p95: {live_p95} (limit 50 ms)")
        cancel_max = results["ours"]["live"]["summary"]["cancel_s_max"]
        print(f"{'met   ' if cancel_max is not None and cancel_max <= 3 else 'MISSED'} cancel to cancelled result, "
              f"max: {cancel_max} (limit 3 s)")
    print(f"wrote {args.out}/benchmarks.md, benchmarks.json, benchmarks-create.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
