"""The server's run loop: clustering phase, rounds, evaluation, and recording."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import replace

import numpy as np
from flwr.app import ConfigRecord, Message
from flwr.serverapp import Grid

from fedrouter import protocol as p
from fedrouter.checkpoint import save_checkpoint
from fedrouter.errors import FedRouterError
from fedrouter.events import (
    Clustering,
    Eval,
    Failure,
    Finish,
    Resume,
    Round,
    Setup,
    Start,
    Train,
)
from fedrouter.profiling import messages_bytes, peak_rss_mb, phase, take_phases
from fedrouter.results import RunRecorder, Summary
from fedrouter.strategies.fedrouter import (
    ClientInfo,
    ClusteredStrategy,
    EvalOutcome,
    TrainOutcome,
)

logger = logging.getLogger(__name__)

REPLY_TIMEOUT = 24 * 3600.0  # a round on a big model can be slow; failures come back as errors


def wait_for_nodes(grid: Grid, count: int, timeout: float = 600.0) -> list[int]:
    """Wait until ``count`` nodes are connected and return their ids."""
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < count:
        if time.monotonic() > deadline:
            raise FedRouterError(f"only {len(nodes)} of {count} clients connected in {timeout}s")
        time.sleep(0.5)
    return nodes[:count] if len(nodes) > count else nodes


def exchange(grid: Grid, messages: list[Message], traffic: dict) -> list[Message]:
    """Send ``messages``, wait for every reply, and note the bytes each way in ``traffic``."""
    traffic["to_clients"] = messages_bytes(messages)
    replies = list(grid.send_and_receive(messages, timeout=REPLY_TIMEOUT))
    traffic["from_clients"] = messages_bytes(replies)
    return replies


def clustering_phase(
    grid: Grid, nodes: list[int], recorder: RunRecorder, query: p.ClusterQuery, traffic: dict
):
    """Ask every client to cluster its data; return their ClientInfo and the init adapter.

    The first client also sends the initial adapter. ``traffic`` receives the bytes sent
    each way.
    """
    messages = [
        Message(
            replace(query, send_adapter=i == 0).content(),
            dst_node_id=node,
            message_type=p.CLUSTER_QUERY,
        )
        for i, node in enumerate(nodes)
    ]
    replies = exchange(grid, messages, traffic)
    for reply in replies:
        if reply.has_error():
            info = p.failure(reply.metadata.src_node_id, reply.error.reason)
            recorder.record(Failure(phase="clustering", **info))
            logger.error("client %s failed to cluster its data: %s", info["node"], info["error"])
    clients, init_adapter = [], None
    answered = [
        (r.metadata.src_node_id, p.ClusterReply.parse(r.content))
        for r in replies
        if not r.has_error()
    ]
    for node, reply in sorted(answered, key=lambda item: item[1].partition_id):
        clients.append(
            ClientInfo(
                node_id=node,
                partition_id=reply.partition_id,
                centroids=reply.centroids,
                tasks=reply.local_tasks,
                sizes=tuple(int(s) for s in reply.sizes),
            )
        )
        recorder.record(
            Clustering.from_fields(
                process_fields(reply.metrics),
                partition_id=reply.partition_id,
                local_purity=float(reply.metrics.get(p.LOCAL_PURITY, -1.0)),
            )
        )
        if reply.adapter is not None:
            with phase("serialization"):
                init_adapter = p.from_record(reply.adapter)
    if init_adapter is None:
        raise FedRouterError("no client returned the initial adapter; see the failures above")
    return sorted(clients, key=lambda c: c.partition_id), init_adapter


def process_fields(metrics: dict) -> dict:
    """Keep the per-process fields (pid, loads, memory) and timings of a reply's metrics."""
    fields = {p.event_field(k): int(metrics.get(k, -1)) for k in (p.PID, p.MODEL_LOADS)}
    for prefix in (p.PEAK_PREFIX, p.SECONDS_PREFIX, p.PHASE_PREFIX):
        fields.update({p.event_field(k): v for k, v in metrics.items() if k.startswith(prefix)})
    return fields


def traffic_fields(traffic: dict) -> dict:
    """Flatten message sizes for an event: bytes each way, and how many are arrays."""
    out = {}
    for direction, sizes in traffic.items():
        out[f"messages_{direction}"] = sizes["messages"]
        out[f"bytes_{direction}"] = sizes["array_bytes"] + sizes["other_bytes"]
        out[f"array_bytes_{direction}"] = sizes["array_bytes"]
    return out


def server_fields() -> dict:
    """The server process's phase seconds since the last event, and its peak memory."""
    return {
        "server_peak_rss_mb": peak_rss_mb(),
        **{
            p.event_field(f"{p.PHASE_PREFIX}server/{name}"): secs
            for name, secs in take_phases().items()
        },
    }


def log_round(server_round: int, num_rounds: int, outcome: TrainOutcome, seconds: float) -> None:
    """Log one line per round: loss, time, and how many clients trained each cluster."""
    trained = outcome.trained
    loss = np.mean([t[p.TRAIN_LOSS] for t in trained]) if trained else float("nan")
    # one record per trained local cluster: count each client once per global cluster
    per_cluster = Counter(g for _, g in {(t["node"], int(t[p.GLOBAL_CLUSTER])) for t in trained})
    sizes = ", ".join(f"c{g}:{n}" for g, n in sorted(per_cluster.items()))
    logger.info(
        "round %d/%d  loss %.4f  %.1fs  clients per cluster {%s}%s",
        server_round,
        num_rounds,
        loss,
        seconds,
        sizes,
        f"  failures {len(outcome.failures)}" if outcome.failures else "",
    )


def log_eval_table(server_round: int, evals: list[dict], mean: dict) -> None:
    """Log a small table of per-client evaluation results."""
    lines = [f"eval round {server_round}", "client  n    rouge1  rouge2  rougeL  routing"]
    for e in sorted(evals, key=lambda e: e["partition_id"]):
        lines.append(
            f"{e['partition_id']:>6}  {int(e[p.NUM_EXAMPLES]):<4} "
            + "  ".join(f"{e[k]:.4f}" for k in p.ROUGE_KEYS)
            + f"  {e[p.ROUTING_ACCURACY]:.3f}"
        )
    lines.append(
        f"{'mean':>6}  {'':<4} "
        + "  ".join(f"{mean[k]:.4f}" for k in p.ROUGE_KEYS)
        + f"  {mean[p.ROUTING_ACCURACY]:.3f}"
    )
    logger.info("\n".join(lines))


def run_federation(
    cfg, grid: Grid, strategy: ClusteredStrategy, recorder: RunRecorder, lora, checkpoint=None
):
    """Run the clustering phase and every round; record everything; return the summary.

    ``checkpoint`` (of the open run, when resuming) is where the rounds continue from.
    """
    start = time.perf_counter()
    recorder.record(Start())
    history, first_round = prepare(cfg, grid, strategy, recorder, checkpoint)
    for server_round in range(first_round, cfg.num_rounds + 1):
        play_round(cfg, grid, strategy, recorder, server_round, history)
        with phase("file-io"):
            if server_round in cfg.evaluation_rounds or server_round == cfg.num_rounds:
                for g, arrays in strategy.adapters.items():
                    recorder.save_adapter(server_round, g, arrays, lora)
            recorder.flush()
            if server_round % cfg.save_every == 0 or server_round == cfg.num_rounds:
                meta = {
                    "server_round": server_round,
                    "strategy": strategy.state_meta(),
                    "history": history,
                    "n_events": len(recorder.events),
                }
                save_checkpoint(recorder.run_dir, server_round, strategy.state_arrays(), meta)
    with phase("file-io"):
        recorder.write_json("clustering.json", strategy.clustering_report())  # cfl regroups
    recorder.record(Finish(seconds=time.perf_counter() - start, fields=server_fields()))
    recorder.flush()
    summary = build_summary(cfg, history, recorder, time.perf_counter() - start)
    recorder.write_json("summary.json", summary.to_json())
    return summary


def prepare(cfg, grid: Grid, strategy, recorder: RunRecorder, checkpoint):
    """Cluster, match clusters, and restore the checkpoint if any; return (history, round)."""
    nodes = wait_for_nodes(grid, cfg.num_clients)
    start = time.perf_counter()
    traffic: dict = {}
    clients, init_adapter = clustering_phase(
        grid, nodes, recorder, strategy.cluster_query(), traffic
    )
    strategy.setup(clients, init_adapter)
    strategy.summary()
    if checkpoint is None:
        recorder.write_json("clustering.json", strategy.clustering_report())
        history, first_round = {}, 1
    else:
        strategy.restore(checkpoint.arrays, checkpoint.meta["strategy"])
        history = {int(r): v for r, v in checkpoint.meta["history"].items()}
        first_round = checkpoint.server_round + 1
        recorder.record(Resume(from_round=first_round))
        logger.info("resuming after round %d", checkpoint.server_round)
    logger.info("global clusters by task: %s", strategy.cluster_tasks)
    recorder.record(
        Setup(
            seconds=time.perf_counter() - start,
            fields={**traffic_fields(traffic), **server_fields()},
        )
    )
    recorder.flush()
    return history, first_round


def play_round(cfg, grid: Grid, strategy, recorder: RunRecorder, server_round: int, history):
    """Train one round, and evaluate if it is an evaluation round."""
    round_start = time.perf_counter()
    messages = list(strategy.configure_train(server_round, None, ConfigRecord(), grid))
    traffic: dict = {}
    replies = exchange(grid, messages, traffic)
    outcome = strategy.aggregate_train(server_round, replies)
    record_train(recorder, outcome, server_round)
    recorder.record(
        Round(
            round=server_round,
            stage="train",
            seconds=time.perf_counter() - round_start,
            fields={**traffic_fields(traffic), **server_fields()},
        )
    )
    n_trained = len(outcome.nodes())
    if n_trained < cfg.min_fit_clients:
        recorder.flush()
        raise FedRouterError(
            f"round {server_round}: {n_trained} clients trained, "
            f"fewer than min_fit_clients={cfg.min_fit_clients}"
        )
    log_round(server_round, cfg.num_rounds, outcome, time.perf_counter() - round_start)
    if server_round in cfg.evaluation_rounds:
        history[server_round] = evaluate_round(cfg, grid, strategy, recorder, server_round)


def record_train(recorder: RunRecorder, outcome: TrainOutcome, server_round: int) -> None:
    """Record one train event per trained local cluster and one per failure."""
    for t in outcome.trained:
        recorder.record(Train.from_fields(p.event_fields(t, drop=("node",)), round=server_round))
    for f in outcome.failures:
        recorder.record(Failure(phase="train", round=server_round, **f))
        logger.error("round %d: client %s failed: %s", server_round, f["node"], f["error"])


def evaluate_round(cfg, grid: Grid, strategy, recorder: RunRecorder, server_round: int) -> dict:
    """Evaluate every client with routing and record per-client metrics."""
    start = time.perf_counter()
    messages = list(strategy.configure_evaluate(server_round, None, ConfigRecord(), grid))
    traffic: dict = {}
    replies = exchange(grid, messages, traffic)
    outcome: EvalOutcome = strategy.aggregate_evaluate(server_round, replies)
    recorder.record(
        Round(
            round=server_round,
            stage="evaluate",
            seconds=time.perf_counter() - start,
            fields={**traffic_fields(traffic), **server_fields()},
        )
    )
    for e in outcome.clients:
        recorder.record(Eval.from_fields(p.event_fields(e), round=server_round))
    for f in outcome.failures:
        recorder.record(Failure(phase="evaluate", round=server_round, **f))
        logger.error("eval round %d: client %s failed: %s", server_round, f["node"], f["error"])
    if outcome.mean is None:
        logger.error("eval round %d: no client returned metrics", server_round)
        return {}
    log_eval_table(server_round, outcome.clients, outcome.mean)
    return {"mean": outcome.mean, "clients": list(outcome.clients)}


def build_summary(cfg, history: dict[int, dict], recorder: RunRecorder, seconds: float) -> Summary:
    """Summarise: final ROUGE per client and the client-weighted mean, per eval round too."""
    loads: dict[int, int] = {}
    for event in recorder.events:
        if event.get("pid", -1) >= 0:
            loads[event["pid"]] = max(loads.get(event["pid"], 0), event.get("model_loads", 0))
    evaluated = [r for r in sorted(history) if history[r]]
    final = history[evaluated[-1]] if evaluated else {}
    return Summary(
        fed_alg=cfg.fed_alg,
        seed=cfg.seed,
        num_rounds=cfg.num_rounds,
        wall_seconds=seconds,
        final_round=evaluated[-1] if evaluated else None,
        final=final.get("mean", {}),
        final_per_client={
            str(e["partition_id"]): {k: e[k] for k in ("rouge1", "rouge2", "rougeL")}
            for e in final.get("clients", [])
        },
        by_round={r: history[r].get("mean", {}) for r in evaluated},
        model_loads_per_process={str(pid): n for pid, n in sorted(loads.items())},
        model_source=recorder.model_source(),
    )
