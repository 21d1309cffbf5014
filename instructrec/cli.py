"""Command line: ``instructrec <command> --help``.

Components (stream-worker, pool, replay, trigger, tail, create-topics) talk to the
cluster named by ``KAFKA_BOOTSTRAP_SERVERS``; ``run`` and ``broker`` start the embedded
broker when it is unset.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import uuid
from collections.abc import Sequence

import orjson

from instructrec.errors import InstructRecError
from instructrec.settings import Settings


def _settings() -> Settings:
    return Settings()


def cmd_run(args: argparse.Namespace) -> int:
    from instructrec.logs import configure_logging
    from instructrec.replay import ReplayConfig
    from instructrec.runner import RunOptions, print_summary, run_all

    settings = _settings()
    configure_logging(settings.log_format, "WARNING")
    options = RunOptions(
        duration=args.duration or None,
        rate=args.rate,
        replay=ReplayConfig(start=args.start, events=args.events, trigger_every=args.trigger_every),
        quiet=args.quiet,
        warmup=args.warmup,
        alerts=not args.no_alerts,
    )
    summary = run_all(settings, options)
    print_summary(summary)
    return 0 if summary.get("unanswered", 1) == 0 else 1


def _stop_quietly_until_serving() -> None:
    """SIGTERM/SIGINT while a worker starts (imports, model load, waiting for the broker):
    nothing has been taken yet, so exit 0 at once. The worker installs its draining
    handlers when it begins to consume."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def cmd_stream_worker(args: argparse.Namespace) -> int:
    _stop_quietly_until_serving()
    from streams.worker import run_stream_worker

    return run_stream_worker(_settings())


def cmd_alerts_worker(args: argparse.Namespace) -> int:
    _stop_quietly_until_serving()
    from streams.worker import run_alerts_worker

    return run_alerts_worker(_settings())


def cmd_pool(args: argparse.Namespace) -> int:
    _stop_quietly_until_serving()
    from workers.pool import run_pool

    overrides = {}
    if args.workers:
        overrides["pool_workers"] = args.workers
    if args.device:
        overrides["device"] = args.device
    settings = Settings(**overrides) if overrides else _settings()
    return run_pool(settings)


def cmd_replay(args: argparse.Namespace) -> int:
    from instructrec.progress import progress
    from instructrec.replay import ReplayConfig, Replayer, catalog_records, plan
    from model.data import fetch_ml100k, load_ml100k

    settings = _settings()
    settings.require_bootstrap()
    fetch_ml100k(settings.data_dir)
    dataset = load_ml100k(settings.data_dir)
    replayer = Replayer(settings)
    if not args.no_catalog:
        replayer.send_catalog(catalog_records(dataset))
    config = ReplayConfig(start=args.start, events=args.events, trigger_every=args.trigger_every or 10**12)
    stats = replayer.run(progress(plan(dataset, config), "replay", unit="msg"), args.rate)
    print(orjson.dumps({"catalog": stats.catalog, "events": stats.events, "triggers": stats.triggers}).decode())
    return 0


def cmd_trigger(args: argparse.Namespace) -> int:
    from instructrec.replay import Replayer
    from instructrec.results import ResultCollector, format_result
    from schemas.records import Trigger

    settings = _settings()
    settings.require_bootstrap()
    trigger = Trigger(
        request_id=args.request_id or f"cli-{uuid.uuid4().hex[:12]}",
        user_id=args.user,
        ts=time.time(),
        k=args.k,
        intention=args.intention,
        candidates=args.candidates.split(",") if args.candidates else None,
    )
    collector = ResultCollector(settings).start()
    try:
        Replayer(settings).send_trigger(trigger)
        if not collector.wait_for({trigger.request_id}, args.timeout):
            print(f"no result for {trigger.request_id} within {args.timeout:.0f}s", file=sys.stderr)
            return 1
        rec = collector.results[trigger.request_id]
        if args.json:
            print(orjson.dumps(rec.model_dump(mode="json")).decode())
        else:
            print(f"instruction: {rec.instruction}")
            print(format_result(rec, collector.latencies_ms.get(trigger.request_id), trigger.intention, top=args.k))
        return 0
    finally:
        collector.close()


def cmd_tail(args: argparse.Namespace) -> int:
    import base64

    from confluent_kafka import Consumer

    from instructrec.kafka import consumer_config

    settings = _settings()
    topic = args.topic if args.topic in settings.topics.all() else settings.topic_prefix + args.topic
    consumer = Consumer(
        consumer_config(
            settings, f"tail-{uuid.uuid4().hex[:12]}", **{"auto.offset.reset": "latest" if args.new else "earliest"}
        )
    )
    consumer.subscribe([topic])
    seen, deadline = 0, time.monotonic() + args.timeout if args.timeout else None
    try:
        while (args.max is None or seen < args.max) and (deadline is None or time.monotonic() < deadline):
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            seen += 1
            value = msg.value() or b""
            try:
                doc = orjson.loads(value)
                if args.topic.endswith("dead-letters") and isinstance(doc, dict) and "value_b64" in doc:
                    doc["value_preview"] = base64.b64decode(doc["value_b64"])[:200].decode("utf-8", "replace")
                text = orjson.dumps(doc).decode()
            except orjson.JSONDecodeError:
                text = repr(value[:200])
            print(f"{msg.topic()}[{msg.partition()}]@{msg.offset()} {text}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def cmd_create_topics(args: argparse.Namespace) -> int:
    from instructrec.kafka import create_topics

    settings = _settings()
    created = create_topics(settings)
    for name in settings.topics.all():
        print(f"{name}: {'created' if name in created else 'exists'}")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from instructrec.broker import EmbeddedBroker

    with EmbeddedBroker(port=args.port) as broker:
        print(
            f"export KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers} INSTRUCTREC_BROKER_PROFILE=embedded", flush=True
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from instructrec.bench import BenchConfig, print_bench, run_bench
    from instructrec.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_format, "WARNING")
    config = BenchConfig(
        concurrencies=tuple(int(c) for c in args.concurrency.split(",")), rounds=args.rounds, out_dir=Path(args.out)
    )
    print_bench(run_bench(settings, config))
    return 0


def cmd_chaos(args: argparse.Namespace) -> int:
    from instructrec.chaos import ChaosOptions, print_summary, run_chaos
    from instructrec.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_format, "WARNING")
    options = ChaosOptions(
        events=args.events,
        trigger_every=args.trigger_every,
        rate=args.rate,
        stream_kills=args.kills,
        pool_kills=args.kills,
        terms=args.terms,
        seed=args.seed,
        burn=args.burn,
    )
    summary = run_chaos(settings, options)
    print_summary(summary)
    ok = (
        summary["unanswered"] == 0
        and summary["inconsistent_duplicates"] == 0
        and summary["context_mismatches"] == 0
        and summary["stuck_outbox"] == 0
        and summary["stuck_waiting"] == 0
        and not any(summary["lag"].values())
        and all(code == 0 for code in summary["exit_codes"].values())
        and all(t["exit_code"] == 0 for t in summary["sigterm_restarts"])
    )
    return 0 if ok else 1


def _train_layers(requested: int, device: str) -> int | None:
    if requested > 0:
        return requested
    if requested == 0:
        return None
    from model.device import choose_device

    return None if choose_device(device).device.type == "cuda" else 2


def cmd_train_sentiment(args: argparse.Namespace) -> int:
    """Fine-tune the headline sentiment model (model/sentiment.py) and save it where
    `make run` finds it; nothing to do when one is there (``--force`` trains anew)."""
    from pathlib import Path

    from model.exceptions import ModelNotFound
    from model.scorer import default_model_dir
    from model.sentiment import FinetuneConfig, evaluate_sentiment, resolve_sentiment, sentiment_root

    out = Path(args.out) if args.out else sentiment_root(_settings().data_dir)
    if not args.force:
        try:
            print(f"sentiment model present: {resolve_sentiment(out)} (--force trains anew)")
            return 0
        except ModelNotFound:
            pass
    results = evaluate_sentiment(default_model_dir(), out, FinetuneConfig(epochs=args.epochs, seed=args.seed))
    held_out = {name: {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"]} for name, r in results.items()}
    print("sentiment: " + orjson.dumps({"model_dir": results["sentiment"]["model_dir"], "held_out": held_out}).decode())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train the version `make run` serves (instructrec/served.py) under ``--out`` and
    point LATEST at it; nothing to do when LATEST names one trained with this recipe
    (``--force`` trains anew)."""
    from pathlib import Path

    from instructrec.logs import configure_logging
    from instructrec.served import SERVED_STEPS, served_config, served_version, train_version
    from model.data import fetch_ml100k, load_ml100k
    from model.evaluation import leave_one_out

    settings = _settings()
    configure_logging(settings.log_format, "WARNING")
    out = Path(args.out)
    steps = SERVED_STEPS if args.steps is None else args.steps
    recipe = served_config(steps, _train_layers(args.layers, args.device), args.seed, args.device, args.lr)
    present = served_version(out, recipe)
    if present is not None and not args.force:
        print(f"model present: {present} (--force trains anew)")
        return 0
    dataset = load_ml100k(fetch_ml100k(settings.data_dir).parent)
    path, card, _ = train_version(settings, dataset, leave_one_out(dataset), recipe, out, args.calibration_users)
    print("train: " + orjson.dumps({"model_dir": str(path), "validation": card["validation"]}).decode())
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from instructrec.evaluate import EvalConfig, print_eval, run_eval
    from instructrec.logs import configure_logging
    from instructrec.served import SERVED_STEPS

    settings = _settings()
    configure_logging(settings.log_format, "WARNING")
    config = EvalConfig(
        users=args.users,
        protocols=tuple(args.protocols.split(",")),
        seed=args.seed,
        with_model=not args.no_model,
        with_sasrec=not args.no_sasrec,
        sasrec_epochs=args.sasrec_epochs,
        out_dir=Path(args.out),
        train_steps=SERVED_STEPS if args.train_steps is None else args.train_steps,
        train_layers=_train_layers(args.train_layers, args.train_device),
        train_device=args.train_device,
        train_lr=args.train_lr,
        model_dir=Path(args.model) if args.model else None,
        models_root=Path(args.models_root),
        intention_users=args.intention_users,
        calibration_users=args.calibration_users,
        sentiment_epochs=args.sentiment_epochs,
        peers=tuple(filter(None, args.peers.split(","))),
        peer_seeds=args.peer_seeds,
        peer_max_epochs=args.peer_max_epochs,
        peers_dir=Path(args.peers_dir),
    )
    print_eval(run_eval(settings, config))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from instructrec.peers import DEFAULT_PEERS  # stdlib and model.data only: cheap

    parser = argparse.ArgumentParser(prog="instructrec", description="Streaming InstructRec recommendations on Kafka.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("run", help="run everything: broker (embedded if none configured), stream worker, pool, replay")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds and print a summary")
    p.add_argument("--rate", type=float, default=200.0, help="events per second to replay (default 200)")
    p.add_argument("--events", type=int, default=None, help="replay at most this many events")
    p.add_argument("--start", type=int, default=0, help="position in the time-ordered log to start from")
    p.add_argument("--trigger-every", type=int, default=25, help="one trigger per this many events (default 25)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument(
        "--warmup", type=float, default=0.0, help="seconds of replay whose triggers are left out of the latency figures"
    )
    p.add_argument(
        "--no-alerts", action="store_true", help="no alerts worker and no sample news, even with a sentiment model"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("stream-worker", help="run one Faust stream worker (needs KAFKA_BOOTSTRAP_SERVERS)")
    p.set_defaults(func=cmd_stream_worker)

    p = sub.add_parser(
        "alerts-worker", help="run the financial alerts worker: news -> sentiment -> surges -> followers"
    )
    p.set_defaults(func=cmd_alerts_worker)

    p = sub.add_parser("pool", help="run a scoring pool: one process per GPU, else one CPU process")
    p.add_argument("--workers", type=int, default=None, help="number of member processes (default: one per GPU)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    p.set_defaults(func=cmd_pool)

    p = sub.add_parser("replay", help="replay ml-100k as catalog, event and trigger streams")
    p.add_argument("--rate", type=float, default=1000.0, help="events per second (0: as fast as possible)")
    p.add_argument("--events", type=int, default=None, help="number of events (default: the whole log)")
    p.add_argument("--start", type=int, default=0, help="position in the time-ordered log to start from")
    p.add_argument("--trigger-every", type=int, default=0, help="one trigger per this many events (0: none)")
    p.add_argument("--no-catalog", action="store_true", help="do not send the catalog first")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("trigger", help="send one trigger and print the answer")
    p.add_argument("user", help="user id")
    p.add_argument("--intention", default=None, help='free text, e.g. "something light for tonight"')
    p.add_argument("--candidates", default=None, help="comma-separated item ids to re-rank")
    p.add_argument("-k", type=int, default=10, help="number of items (default 10)")
    p.add_argument("--request-id", default=None)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--json", action="store_true", help="print the whole result record as JSON")
    p.set_defaults(func=cmd_trigger)

    p = sub.add_parser("tail", help="print the messages of a topic (name with or without prefix)")
    p.add_argument("topic", help="e.g. recommendations, dead-letters, events")
    p.add_argument("--new", action="store_true", help="only messages that arrive from now on")
    p.add_argument("--max", type=int, default=None, help="stop after this many messages")
    p.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("create-topics", help="create every topic of the contract (idempotent)")
    p.set_defaults(func=cmd_create_topics)

    p = sub.add_parser("bench", help="benchmark harness: scoring modes side by side; report + plot; `bench: {json}`")
    p.add_argument("--concurrency", default="1,8,32,128", help="comma-separated concurrent requests")
    p.add_argument("--rounds", type=int, default=5, help="rounds per mode (medians are reported)")
    p.add_argument("--out", default=".data/bench", help="report directory")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("train", help="train the version `make run` serves, once (instructrec/served.py)")
    p.add_argument("--out", default=".data/models", help="models root (LATEST moves to the new version)")
    p.add_argument("--steps", type=int, default=None, help="fine-tuning steps (default: the served recipe's)")
    p.add_argument(
        "--layers", type=int, default=-1, help="top layers fine-tuned (0: all; default: all on CUDA, 2 on CPU)"
    )
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda:N")
    p.add_argument("--calibration-users", type=int, default=None, help="fusion fitted on a sample's validation items")
    p.add_argument("--force", action="store_true", help="train even when LATEST names a version of this recipe")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "train-sentiment", help="fine-tune the headline sentiment model the pools use for alerts (model/sentiment.py)"
    )
    p.add_argument("--out", default=None, help="models root (default <data dir>/models/sentiment; LATEST moves)")
    p.add_argument("--epochs", type=int, default=15, help="at most this many epochs; validation picks one (default 15)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="train even when a model is there")
    p.set_defaults(func=cmd_train_sentiment)

    p = sub.add_parser("eval", help="offline evaluation on ml-100k, every method side by side; `eval: {json}`")
    p.add_argument("--users", type=int, default=None, help="evaluate a seeded sample of users (default: all)")
    p.add_argument(
        "--protocols",
        default="full,1+99,1+9,1+9-hard,long-tail,intention-en,intention-zh",
        help="comma-separated: full, 1+99, 1+19, 1+9, 1+9-hard, long-tail, intention-en, intention-zh "
        "(each intention protocol also gives its :none twin)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-model", action="store_true", help="leave out the shipped transformer")
    p.add_argument("--no-sasrec", action="store_true", help="leave out SASRec (trained in the run)")
    p.add_argument("--sasrec-epochs", type=int, default=60)
    p.add_argument("--out", default=".data/eval", help="report directory")
    p.add_argument(
        "--train-steps", type=int, default=None, help="fine-tuning steps (0: none; default: the served recipe's)"
    )
    p.add_argument(
        "--train-layers",
        type=int,
        default=-1,
        help="top layers fine-tuned (0: all, ~2x slower on CPU; default: all on CUDA, the top 2 on CPU)",
    )
    p.add_argument("--train-lr", type=float, default=3e-4, help="fine-tuning learning rate")
    p.add_argument("--train-device", default="auto", help="auto (CUDA when present) | cpu | cuda:N")
    p.add_argument("--model", default=None, help="evaluate this trained model directory instead of training")
    p.add_argument("--models-root", default=".data/models", help="where trained versions are saved")
    p.add_argument("--intention-users", type=int, default=100, help="users in the intention probe (0: skip)")
    p.add_argument(
        "--calibration-users",
        type=int,
        default=None,
        help="fit the fusion weights on the validation items of a seeded sample of users (default: all)",
    )
    p.add_argument(
        "--sentiment-epochs", type=int, default=15, help="fine-tuning epochs of the headline sentiment model (0: skip)"
    )
    p.add_argument(
        "--peers",
        default=",".join(peer.model for peer in DEFAULT_PEERS),
        help="RecBole models run as peers, comma-separated ('' for none)",
    )
    p.add_argument("--peer-seeds", type=int, default=3, help="seeds per trained peer")
    p.add_argument(
        "--peer-max-epochs", type=int, default=None, help="cap on a peer's epochs (default: early stopping only)"
    )
    p.add_argument("--peers-dir", default=".data/peers", help="RecBole's data and the peers' cached runs")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("chaos", help="SIGKILL workers at random during a replay, then check delivery; `chaos: {json}`")
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--trigger-every", type=int, default=24, help="a trigger after every n-th event")
    p.add_argument("--rate", type=float, default=600.0, help="events/s offered")
    p.add_argument("--kills", type=int, default=5, help="SIGKILLs of the stream worker, and as many of the pool")
    p.add_argument("--terms", type=int, default=1, help="graceful restarts (SIGTERM under load) of each, timed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--burn", type=int, default=0, help="busy processes spinning beside the system for the whole run (CPU load)"
    )
    p.set_defaults(func=cmd_chaos)

    p = sub.add_parser("broker", help="run the embedded broker in the foreground and print its address")
    p.add_argument("--port", type=int, default=None)
    p.set_defaults(func=cmd_broker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InstructRecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
