"""Run a simulation whose ClientApp fails on purpose for one partition (a test helper).

    python tests/faulty_run.py PARTITION KINDS [simulation flags...]

KINDS is a comma list of message types to fail on, e.g. "train" or "train,evaluate".
"""

import sys

from fedrouter import simulation
from fedrouter.client_app import make_client_app
from fedrouter.config import run_cli


def fail_partition(partition: int, kinds: set[str]):
    """Return a Flower client mod that raises for one partition's messages of ``kinds``."""

    def mod(msg, context, call_next):
        if int(context.node_config["partition-id"]) == partition and (
            msg.metadata.message_type.split(".")[0] in kinds
        ):
            raise RuntimeError(f"injected failure in partition {partition}")
        return call_next(msg, context)

    return mod


def run_with_failures(partition: int, kinds: set[str], argv: list[str]) -> None:
    """Run the simulation CLI with the fault-injecting ClientApp."""

    def run(cfg):
        app = make_client_app(cfg, mods=[fail_partition(partition, kinds)])
        return simulation.run(cfg, client_app=app)

    run_cli(run, argv)


if __name__ == "__main__":
    run_with_failures(int(sys.argv[1]), set(sys.argv[2].split(",")), sys.argv[3:])
